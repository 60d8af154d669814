"""The points writer: reads the points streams that indexer tasks fill, writes to the store."""

from service.writer.loop import Writer, WriterHealth, run_writer

__all__ = ["Writer", "WriterHealth", "run_writer"]
