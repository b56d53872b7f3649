"""Build shim: metadata lives in setup.cfg; this file only maps the repository's top-level
folders onto the ``emforge`` import package (``framework/`` -> ``emforge``,
``protocols/`` -> ``emforge.protocols``, ``templates/`` -> ``emforge.templates``)."""

from setuptools import find_packages, setup

_ROOTS = {
    "framework": "emforge",
    "protocols": "emforge.protocols",
    "templates": "emforge.templates",
}


def _packages():
    names = []
    for folder, package in _ROOTS.items():
        names.append(package)
        names += [f"{package}.{sub}" for sub in find_packages(where=folder)]
    return names


setup(packages=_packages(), package_dir={pkg: folder for folder, pkg in _ROOTS.items()})
