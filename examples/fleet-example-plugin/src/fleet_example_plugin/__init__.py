"""Example fleet plug-in package: adds the ``lab-rk3576`` board family (see family.py)."""
