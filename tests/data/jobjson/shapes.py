"""Writes the hand-made job-object fixtures in this folder (not a test; run it by hand).

Each Slurm release prints job objects in the shape of its data_parser plugin (learnt from
SchedMD/slurm's src/plugins/openapi/dbv0.0.38 and src/plugins/data_parser/v0.0.39 to v0.0.44
parsers: which key holds what, which numbers are plain and which are
{"set", "infinite", "number"}, state strings or lists, raw or decoded exit codes). The jobs
below are described once, neutrally, and written in every shape that can express them:

    scontrol-<version>.json   {"jobs": [...]} as `scontrol show job --json` prints it
    sacct-<version>.json      {"jobs": [...]} as `sacct --json` prints it

Only the keys jobcompd reads, plus a few it must ignore, are written; real dumps carry many
more. Each shape was checked against a real capture of that release (the real dumps in
../shared/slurm/real-dumps/, see tests/test_real_dumps.py, which also compares the shape of
every key jobcompd reads): 23.02 scontrol prints exit codes as uint32 {"set", ...} wait
statuses; 23.02 to 24.11 scontrol print the standard-stream paths expanded (stdout's default
when unset, stderr falling back to stdout); sacct prints an allocation's energy count as -2
(NO_VAL64 through its int64 dumper) from 23.02 on; sacct of 24.05 to 25.05 prints
`<work dir>/slurm-%j.out` for a batch job that set no stdout; 22.05 sacct prints nulls for
empty strings. The expected messages (expected/*.expected) come from jobcompd and were
checked by hand
against the job list below; regenerate them with `python -m tests.test_jobjson --write`
after a deliberate change, and check the diff.

    python tests/data/jobjson/shapes.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
NO_VAL = 0xFFFFFFFE
INFINITE = 0xFFFFFFFF
T0 = 1780000000  # 2026-05-28T20:26:40Z

TRES_REQ = [("cpu", "", 1, 8), ("mem", "", 2, 16000), ("node", "", 4, 2), ("billing", "", 5, 8)]
TRES_ALLOC = [
    ("cpu", "", 1, 8),
    ("mem", "", 2, 16384),
    ("energy", "", 3, -2),
    ("node", "", 4, 2),
    ("billing", "", 5, 8),
    ("gres", "gpu", 1001, 2),
]
ONE_CPU = [("cpu", "", 1, 1), ("mem", "", 2, 1536), ("node", "", 4, 1), ("billing", "", 5, 1)]
ONE_CPU_ALLOC = [("cpu", "", 1, 1), ("mem", "", 2, 1536), ("energy", "", 3, -2), ("node", "", 4, 1),
                 ("billing", "", 5, 1)]  # fmt: skip

BASE = {
    "array_job_id": 0,
    "array_task_id": None,
    "het_job_id": 0,
    "het_job_offset": None,
    "user": "alice",
    "uid": 1001,
    "group": "physics",
    "gid": 2001,
    "account": "physics",
    "assoc_cluster": "mycluster",
    "partition": "batch",
    "qos": "normal",
    "flags": [],
    "derived_raw": 0,
    "resize": 0,
    "priority": 4000,
    "tasks": 1,
    "tasks_per_node": 0,
    "tasks_per_tres": None,
    "cpus_per_task": 1,
    "work_dir": "/home/alice",
    "stdin": "/dev/null",
    "stdout": "",
    "stderr": "",
    "features": "",
    "excluded": "",
    "reservation": "",
    "wckey": "",
    "container": "",
    "comment": "",
    "admin_comment": "",
    "script": "#!/bin/sh\nsrun true\n",
    "alloc_node": "login1",
    "failed_node": "",
    "tres_req_str": "cpu=1,mem=1.50G,node=1,billing=1",
    "tres_alloc_str": "cpu=1,mem=1.50G,node=1,billing=1",
    "tres_req": ONE_CPU,
    "tres_alloc": ONE_CPU_ALLOC,
    "nodes": "node07",
    "cpus": 1,
    "node_count": 1,
    "exit_raw": 0,
    "time_limit": 60,
}


def job(**fields):
    return {**BASE, **fields}


JOBS = [
    # A finished batch job with everything set: quotes, tab, newline, unicode in the name,
    # spaces in the paths, TRES with memory in G and a GRES.
    job(
        job_id=1001, name='sim "run" \\ tab\there\nline2 ünïcødé ✓',
        state="COMPLETED", submit=T0, eligible=T0 + 5, start=T0 + 65, end=T0 + 3665,
        nodes="node[01-02]", cpus=8, node_count=2, time_limit=120, priority=12345,
        tasks=8, tasks_per_node=4, tasks_per_tres=0, cpus_per_task=1,
        work_dir="/home/alice/my project", stdout="/home/alice/my project/out %j.log",
        stderr="/home/alice/my project/err %j.log", features="ib", excluded="node03",
        reservation="maint", wckey="proj", comment="user comment", admin_comment="admin note",
        script="#!/bin/sh\n#SBATCH -N2\nsrun ./sim --in 'a b'\n",
        tres_req_str="cpu=8,mem=16000M,node=2,billing=8",
        tres_alloc_str="cpu=8,mem=16G,node=2,billing=8,gres/gpu=2",
        tres_req=TRES_REQ, tres_alloc=TRES_ALLOC,
    ),
    # Cancelled while pending (held): never got nodes, start = end = cancel time, no
    # eligible time, unlimited time limit.
    job(
        job_id=1002, name="held", state="CANCELLED", submit=T0 + 100, eligible=0,
        start=T0 + 400, end=T0 + 400, nodes="", cpus=1, node_count=1, time_limit="unlimited",
        priority=0, tasks=None, tres_alloc_str="", tres_alloc=[],
    ),
    # The first run of a requeued job: Slurm records it with state PENDING.
    job(
        job_id=1003, name="requeued", state="PENDING", flags=["REQUEUED"], submit=T0 + 10,
        eligible=T0 + 10, start=T0 + 20, end=T0 + 50,
    ),
    # An array task that failed with exit code 5.
    job(
        job_id=1103, name="array", array_job_id=1100, array_task_id=3, state="FAILED",
        submit=T0 + 30, eligible=T0 + 30, start=T0 + 31, end=T0 + 91, exit_raw=5 << 8,
    ),
    # The second component of a heterogeneous job.
    job(
        job_id=1201, name="het", het_job_id=1200, het_job_offset=1, state="COMPLETED",
        submit=T0 + 40, eligible=T0 + 40, start=T0 + 45, end=T0 + 46,
    ),
    # Killed by its time limit: SIGTERM (the status `scontrol` shows once the job is gone).
    job(
        job_id=1004, name="timeout", state="TIMEOUT", submit=T0 + 50, eligible=T0 + 50,
        start=T0 + 60, end=T0 + 120, time_limit=1, exit_raw=15,
    ),
    # Out of memory: Slurm reports signal 125.
    job(
        job_id=1005, name="oom", state="OUT_OF_MEMORY", submit=T0 + 60, eligible=T0 + 60,
        start=T0 + 61, end=T0 + 71, exit_raw=125, derived_raw=125,
    ),
    # A step killed by SIGKILL: signal exit of the job and of the steps.
    job(
        job_id=1006, name="sigkill", state="FAILED", submit=T0 + 70, eligible=T0 + 70,
        start=T0 + 72, end=T0 + 73, exit_raw=9, derived_raw=9,
    ),
    # A user whose name did not resolve where Slurm printed the job (scontrol: no name).
    job(
        job_id=1007, name="nouser", user="", uid=54321, state="COMPLETED",
        submit=T0 + 80, eligible=T0 + 80, start=T0 + 80, end=T0 + 81,
    ),
    # Still running: a start record (sacct: refused by backfill, which wants end records).
    job(
        job_id=1008, name="running", state="RUNNING", submit=T0 + 90, eligible=T0 + 90,
        start=T0 + 95, end=T0 + 95 + 3600, exit_raw=0,
    ),
    # Pending: no record at all.
    job(
        job_id=1009, name="pending", state="PENDING", submit=T0 + 99, eligible=T0 + 99,
        start=0, end=0, nodes="", tres_alloc_str="", tres_alloc=[],
    ),
]  # fmt: skip

# scontrol: data_parser version per release, and which keys are {"set", ...} objects.
SCONTROL = {
    "23.02": "v0.0.39",
    "23.11": "v0.0.40",
    "24.05": "v0.0.41",
    "24.11": "v0.0.42",
    "25.05": "v0.0.43",
    "25.11": "v0.0.44",
}
SACCT = {
    "22.05": "dbv0.0.38",
    "23.02": "v0.0.39",
    "23.11": "v0.0.40",
    "24.05": "v0.0.41",
    "24.11": "v0.0.42",
    "25.05": "v0.0.43",
    "25.11": "v0.0.44",
}


def numobj(value, unset=NO_VAL):
    if value == "unlimited" or value == INFINITE:
        return {"set": False, "infinite": True, "number": 0}
    if value is None or value == unset:
        return {"set": False, "infinite": False, "number": 0}
    return {"set": True, "infinite": False, "number": value}


def plain(value):
    """22.05's dumpers: NO_VAL and INFINITE print as null."""
    return None if value in (None, "unlimited") else value


def exit_object(raw, *, old):
    """The data_parser exit code: dbv0.0.38/v0.0.39 (old) or PROCESS_EXIT_CODE (23.11+)."""
    low = raw & 0x7F
    if low == 0:
        rc = (raw >> 8) & 0xFF
        status, signal = ("SUCCESS" if rc == 0 else "ERROR"), None
    else:
        status, rc, signal = "SIGNALED", None, low
    names = {9: "KILL", 15: "TERM", 125: ""}
    if old:
        out = {"status": status, "return_code": rc if rc is not None else 0}
        if signal is not None:
            out["signal"] = {"signal_id": signal, "name": names.get(signal, "")}
        return out
    return {
        "status": [status],
        "return_code": numobj(rc),
        "signal": {
            "id": numobj(signal, unset=0xFFFE),
            "name": names.get(signal, "") if signal else "",
        },
    }


def state_value(j, *, as_list):
    if as_list:
        return [j["state"], *j["flags"]]
    return j["flags"][0] if j["flags"] else j["state"]


def scontrol_job(j, version):
    parser = SCONTROL[version]
    new_times = parser != "v0.0.39"  # times are {"set", ...} from 23.11 on
    old_exit = parser == "v0.0.39"  # 23.02: the raw wait status as a uint32 number object

    def t(value):
        return numobj(value, unset=0) if new_times else value

    def exit_code(raw):
        return numobj(raw) if old_exit else exit_object(raw, old=False)

    return {
        "account": j["account"],
        "accrue_time": t(j["eligible"]),
        "admin_comment": j["admin_comment"],
        "allocating_node": j["alloc_node"],
        "array_job_id": numobj(j["array_job_id"]),
        "array_task_id": numobj(j["array_task_id"]),
        "array_max_tasks": numobj(0),
        "array_task_string": "",
        "association_id": 7,
        "batch_flag": True,
        "batch_host": j["nodes"].split("[")[0] if j["nodes"] else "",
        "flags": ["EXACT_CPU_COUNT_REQUESTED"],
        "cluster": "mycluster",
        "command": "/home/alice/job.sh",
        "comment": j["comment"],
        "container": j["container"],
        "cpus_per_task": numobj(j["cpus_per_task"], unset=0xFFFE),
        "dependency": "",
        "derived_exit_code": exit_code(j["derived_raw"]),
        "eligible_time": t(j["eligible"]),
        "end_time": t(j["end"]),
        "excluded_nodes": j["excluded"],
        "exit_code": exit_code(j["exit_raw"]),
        "failed_node": j["failed_node"],
        "features": j["features"],
        "group_id": j["gid"],
        "group_name": j["group"],
        "het_job_id": numobj(j["het_job_id"]),
        "het_job_id_set": f"{j['het_job_id']}-{j['het_job_id'] + 1}" if j["het_job_id"] else "",
        "het_job_offset": numobj(j["het_job_offset"]),
        "job_id": j["job_id"],
        "job_state": state_value(j, as_list=parser != "v0.0.39"),
        "name": j["name"],
        "nodes": j["nodes"],
        "tasks_per_tres": numobj(j["tasks_per_tres"], unset=0xFFFE),
        "tasks_per_node": numobj(j["tasks_per_node"], unset=0xFFFE),
        "cpus": numobj(j["cpus"]),
        "node_count": numobj(j["node_count"]),
        "tasks": numobj(j["tasks"]),
        "partition": j["partition"],
        "priority": numobj(j["priority"]),
        "qos": j["qos"],
        "resize_time": t(j["resize"]),
        "restart_cnt": 1 if j["flags"] else 0,
        "resv_name": j["reservation"],
        "start_time": t(j["start"]),
        "state_reason": "None",
        **streams(j, expanded=parser < "v0.0.43"),
        "submit_time": t(j["submit"]),
        "time_limit": numobj(j["time_limit"]),
        "tres_req_str": j["tres_req_str"],
        "tres_alloc_str": j["tres_alloc_str"],
        "user_id": j["uid"],
        "user_name": j["user"],
        "wckey": j["wckey"],
        "current_working_directory": j["work_dir"],
    }


def streams(j, *, expanded):
    """v0.0.39-42 print slurm_get_job_std*(): patterns expanded, stdout's default when
    unset, stderr falling back to stdout. v0.0.43+ print the paths as submitted and add
    the expanded ones."""
    def expand(path):
        return path.replace("%j", str(j["job_id"]))

    out = expand(j["stdout"]) if j["stdout"] else f"{j['work_dir']}/slurm-{j['job_id']}.out"
    err = expand(j["stderr"]) if j["stderr"] else out
    if expanded:
        return {"standard_error": err, "standard_input": j["stdin"], "standard_output": out}
    return {"standard_input": j["stdin"], "standard_output": j["stdout"],
            "standard_error": j["stderr"], "stdin_expanded": j["stdin"],
            "stdout_expanded": out, "stderr_expanded": err}


def tres_list(items, *, signed=True):
    if not signed:  # 22.05 prints no energy entry
        items = [i for i in items if i[3] != -2]
    return [{"type": k, "name": n, "id": i, "count": c} for k, n, i, c in items if c]


def sacct_job(j, version):
    parser = SACCT[version]
    old = parser in ("dbv0.0.38", "v0.0.39")
    num = plain if parser == "dbv0.0.38" else numobj
    out = {
        "account": j["account"],
        "comment": {
            "administrator": j["admin_comment"],
            "job": j["comment"],
            "system": "",
        },
        "allocation_nodes": j["node_count"] if j["nodes"] else 0,
        "array": {
            "job_id": j["array_job_id"],
            "limits": {"max": {"running": {"tasks": 0}}},
            "task": "",
            "task_id": num(j["array_task_id"]),
        },
        "association": {
            "account": j["account"],
            "cluster": j["assoc_cluster"],
            "partition": "",
            "user": j["user"],
        },
        "cluster": "mycluster",
        "constraints": j["features"],
        "container": j["container"],
        "derived_exit_code": exit_object(j["derived_raw"], old=old),
        "time": {
            "elapsed": max(j["end"] - j["start"], 0) if j["start"] else 0,
            "eligible": j["eligible"],
            "end": j["end"],
            "start": j["start"],
            "submission": j["submit"],
            "suspended": 0,
            "system": {"seconds": 0, "microseconds": 0},
            "limit": num(j["time_limit"]),
            "total": {"seconds": 0, "microseconds": 0},
            "user": {"seconds": 0, "microseconds": 0},
        },
        "exit_code": exit_object(j["exit_raw"], old=old),
        "flags": ["STARTED_ON_SCHEDULE"],
        "group": j["group"],
        "het": {
            "job_id": j["het_job_id"],
            "job_offset": (j["het_job_offset"] if j["het_job_offset"] is not None else NO_VAL)
            if not old
            else plain(j["het_job_offset"]),
        },
        "job_id": j["job_id"],
        "name": j["name"],
        "mcs": {"label": ""},
        "nodes": j["nodes"] or "None assigned",
        "partition": j["partition"],
        "priority": num(j["priority"]),
        "qos": j["qos"],
        "required": {"CPUs": j["cpus"], "memory": 1536},
        "kill_request_user": None,
        # dbv0.0.38 declares the reservation name a number (a bug): it prints one.
        "reservation": {"id": 0, "name": 0 if parser == "dbv0.0.38" else j["reservation"]},
        "state": {
            "current": state_value(j, as_list=not old),
            "reason": "None",
        },
        "steps": [],
        "tres": {
            "allocated": tres_list(j["tres_alloc"], signed=parser != "dbv0.0.38"),
            "requested": tres_list(j["tres_req"]),
        },
        "user": j["user"],
        "wckey": {"wckey": j["wckey"], "flags": []} if j["wckey"] else None,
        "working_directory": j["work_dir"],
    }
    if parser != "dbv0.0.38":
        out["het"]["job_offset"] = numobj(j["het_job_offset"])
    else:  # 22.05 prints empty strings as null
        nulls(out)
    if parser != "dbv0.0.38":  # 23.02 added the script, failed node and submit line
        out["script"] = j["script"]
        out["failed_node"] = j["failed_node"]
        out["submit_line"] = "sbatch job.sh"
    if parser >= "v0.0.41":  # 24.05 added the standard streams and the restart count
        out["stdin"], out["stdout"], out["stderr"] = j["stdin"], j["stdout"], j["stderr"]
        out["restart_cnt"] = 1 if j["flags"] else 0
        out["time"]["planned"] = numobj(0)
    if "v0.0.41" <= parser <= "v0.0.43" and not j["stdout"]:
        # slurmctld's _fill_stdout_str: the default path goes into the database
        pattern = "%A_%a" if j["array_job_id"] else "%j"
        out["stdout"] = f"{j['work_dir']}/slurm-{pattern}.out"
    if parser >= "v0.0.43":
        out["reservation"]["requested"] = ""
    if parser >= "v0.0.40":
        out["association"]["id"] = 7
    return out


def nulls(out):
    """dbv0.0.38 prints unset strings as null: comments, container, TRES names."""
    out["comment"] = {k: v or None for k, v in out["comment"].items()}
    out["container"] = out["container"] or None
    out["association"]["partition"] = None
    out["array"]["task"] = None
    for items in out["tres"].values():
        for item in items:
            item["name"] = item["name"] or None


def meta(parser):
    return {"plugin": {"type": f"openapi/{parser}", "data_parser": parser}}


def main() -> None:
    for version, parser in SCONTROL.items():
        dump = {"jobs": [scontrol_job(j, version) for j in JOBS], "meta": meta(parser)}
        write(HERE / f"scontrol-{version}.json", dump)
    for version, parser in SACCT.items():
        dump = {"jobs": [sacct_job(j, version) for j in JOBS], "meta": meta(parser)}
        write(HERE / f"sacct-{version}.json", dump)


def write(path: Path, dump: dict) -> None:
    path.write_text(json.dumps(dump, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", path)


if __name__ == "__main__":
    main()
