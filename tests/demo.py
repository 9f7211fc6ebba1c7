"""``make run``: a local Tansu broker and the daemon on a demo spool, in the foreground.

Everything lives under ``.run/`` (git-ignored). Stop with Ctrl-C: the daemon gets SIGTERM (purge,
flush, state save) and the broker is stopped after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.broker import Tansu

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"
#: The variables jobcomp/script gives its script, for a made-up job.
DEMO_JOB = (
    "JOBID=42 JOBNAME=demo JOBSTATE=COMPLETED EXITCODE=0:0 DERIVED_EC=0:0 UID=0 GID=0 "
    "USERNAME=root GROUPNAME=root PARTITION=debug NODES=node1 NODECNT=1 PROCS=2 "
    "SUBMIT=1700000000 START=1700000000 END=1700000060 LIMIT=01:00:00"
)
PORT = int(os.environ.get("JOBCOMPD_DEMO_PORT", "19092"))


def main() -> int:
    RUN.mkdir(exist_ok=True)
    (RUN / "state").mkdir(exist_ok=True)
    broker = Tansu(port=PORT, log_path=RUN / "tansu.log").start()
    (RUN / "rdkafka.conf").write_text(
        f"# written by make run\nbootstrap.servers={broker.bootstrap}\n"
    )
    conf = RUN / "jobcompd.conf"
    conf.write_text(
        "# written by make run: a demo set-up under .run/\n"
        "ClusterName=demo\n"
        f"JobCompLoc={RUN / 'rdkafka.conf'}\n"
        "JobCompParams=enable_job_start\n"
        f"SpoolDir={RUN / 'spool'}\n"
        f"StateSaveLocation={RUN / 'state'}\n"
        "DebugFlags=JobComp\n"
        f"SpoolOwners={os.getuid()}\n"
    )
    bindir = Path(sys.executable).parent
    print(
        f"\nTansu broker on {broker.bootstrap}; spool {RUN / 'spool'}\n"
        "In another terminal, drop a record and watch it arrive:\n"
        f"  env -i {DEMO_JOB} {bindir / 'jobcompd-spool'} -d {RUN / 'spool'}\n"
        f"  {bindir / 'jobcompd'} consume -c {conf} --from-beginning\n",
        flush=True,
    )
    daemon = subprocess.Popen([str(bindir / "jobcompd"), "run", "-c", str(conf)])
    try:
        return daemon.wait()
    except KeyboardInterrupt:
        daemon.send_signal(signal.SIGTERM)
        return daemon.wait()
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
