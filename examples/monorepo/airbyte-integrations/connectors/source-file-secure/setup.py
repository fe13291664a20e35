from setuptools import find_packages, setup

# The secure variant re-exports source-file with remote-only URLs.
setup(name="source_file_secure", packages=find_packages(), install_requires=["source-file"])
