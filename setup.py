"""Ships ``examples/model_repository`` inside the wheel as ``kernel/_example_repository``.

``kernel serve`` with no repository serves the examples, so a wheel install needs them as package
data; they stay at ``examples/`` in the source tree, where users and docs look for them. A
``package_dir`` entry for one subpackage cannot be said in pyproject.toml next to ``find``.
Everything else about the distribution is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["kernel", "kernel.*"]), "kernel._example_repository"],
    package_dir={"kernel._example_repository": "examples/model_repository"},
)
