"""Emulated boards: one real OpenSSH sshd per board, each in its own network namespace.

`fleet sim up` makes the boards and writes a standard Ansible inventory for them; `fleet sim
down` removes exactly what `up` recorded in its state file (pids, namespaces, veth links).
"""
