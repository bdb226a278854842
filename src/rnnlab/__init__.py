"""rnnlab: a harness for studying how recurrent cells learn long-range dependencies."""

__version__ = "0.1.0"
