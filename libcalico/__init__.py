"""libcalico: the library every pycalico component shares.

Layers, lowest first (enforced by import-linter, see pyproject.toml):
``errors`` < ``selector`` < ``api`` (resource models) < ``model`` (keys and
KVPairs) < ``backend`` (the datastore contract and its etcd/memory/k8s
implementations) < ``watching`` (the one list+watch loop) < ``client``
(typed CRUD with Calico's defaulting and cross-resource validation).
"""
