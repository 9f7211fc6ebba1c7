"""jobcompd: ships Slurm job records from a spool directory to Kafka."""

__version__ = "0.1.0"
