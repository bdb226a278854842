"""Tasks: where a new task goes.

One module per task, one ``conf/task/<name>.yaml`` per module whose ``_target_`` names the
task class. Every task implements :class:`rnnlab.tasks.base.Task`.
"""
