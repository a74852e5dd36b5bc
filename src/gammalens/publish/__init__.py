"""Publishing a measurement: run directory → ``report.html`` → atlas row, composed by the caller (CLI, sweep, facade)."""

from gammalens.publish.run import publish, publish_sinks, run_writer, write_run

__all__ = ["publish", "publish_sinks", "run_writer", "write_run"]
