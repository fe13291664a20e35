from setuptools import find_packages, setup

setup(name="source_file", packages=find_packages())
