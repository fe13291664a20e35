from setuptools import setup

setup(name="source_legacy_crm")
