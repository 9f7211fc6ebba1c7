"""Read and check jobcompd's configuration: jobcompd.conf, the librdkafka file, slurm.conf.

Everything an operator can get wrong is caught here, at start and on reload, with a message
that names the file, the line, the key and the accepted values, so that a bad edit never
reaches the running daemon (a reload keeps the old config on ConfigError, the only exception
:func:`load` raises for a bad file).

Three files are involved:

- ``jobcompd.conf`` (slurm.conf syntax): ``Key=Value`` per line, keys case-insensitive; its
  keys are one declarative table (:mod:`.keys`), and JobCompParams' options another
  (:mod:`.params`), from which the loader, the status file's summary and the checks of the
  README and ``etc/jobcompd.conf`` all work.
- the ``JobCompLoc`` file (:mod:`.kafka`): librdkafka ``key=value`` lines, parsed exactly as
  Slurm's jobcomp/kafka parses them, and every property offered to librdkafka itself
  (through ctypes) so that a typo is reported with its line before any producer exists.
- ``slurm.conf`` (optional, ``SlurmConf``, :mod:`.slurmconf`): only ``ClusterName`` and
  ``SlurmUser`` are read.
"""

from jobcompd.config.kafka import (
    LIBRDKAFKA_MESSAGE_MAX_BYTES,
    MESSAGE_OVERHEAD_BYTES,
    PRODUCER_DEFAULTS,
    KafkaProperty,
    check_kafka_properties,
    is_secret,
    last_property,
    parse_kafka_file,
    parse_kafka_text,
)
from jobcompd.config.keys import DEFAULT_SPOOL_DIR, DEFAULT_STATE_DIR, KEYS, RESTART_ATTRS, Key
from jobcompd.config.loader import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, config_path, load
from jobcompd.config.params import OPTIONS, Option, Params, parse_params
from jobcompd.config.slurmconf import SlurmConf, read_slurm_conf
from jobcompd.config.source import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_SPOOL_DIR",
    "DEFAULT_STATE_DIR",
    "KEYS",
    "LIBRDKAFKA_MESSAGE_MAX_BYTES",
    "MESSAGE_OVERHEAD_BYTES",
    "OPTIONS",
    "PRODUCER_DEFAULTS",
    "RESTART_ATTRS",
    "Config",
    "ConfigError",
    "KafkaProperty",
    "Key",
    "Option",
    "Params",
    "SlurmConf",
    "check_kafka_properties",
    "config_path",
    "is_secret",
    "last_property",
    "load",
    "parse_kafka_file",
    "parse_kafka_text",
    "parse_params",
    "read_slurm_conf",
]
