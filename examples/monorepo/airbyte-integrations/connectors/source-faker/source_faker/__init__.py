from .source import SourceFaker

__all__ = ["SourceFaker"]
