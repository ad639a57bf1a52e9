"""A backend module that cannot be imported: its models must become UNAVAILABLE."""

raise ImportError("kerneltest_broken_import: this module fails to import on purpose")
