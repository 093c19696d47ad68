"""`fleet deploy`: provision boards with Ansible (playbooks/site.yml) through ansible-runner.

The controller does the work that needs the project tree (building the wheelhouse, checking
artifact sha256s, choosing what each board gets) and hands Ansible a per-host plan; the roles
only copy, install and verify, and report no change when there is nothing to do.
"""
