"""Stand-in for pypa's get-pip.py that ansible-test runs to put pip into its sanity venvs.

ansible-test downloads get-pip.py from a host outside the package registries, which these
machines cannot reach; scripts/sanity caches this file in its place. Like get-pip.py, it
installs pip into the running (empty) virtual environment, then runs `pip install ARGS`:
Python's bundled ensurepip provides a first pip, which then installs the pinned one from PyPI.
"""
import subprocess
import sys

# get-pip.py options that pip itself does not know.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main():
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)


if __name__ == "__main__":
    main()
