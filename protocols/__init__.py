"""The protocols emforge ships, one subpackage per family.

Each family's ``__init__`` only declares its plugin manifest (cheap to import); protocol
classes and kernels are imported on first use.
"""
