"""The appc image format (v0.8.11): manifests, image IDs, archives.

Knows nothing of stores, pods or the API. Implementation lives in `_private` modules; this
module re-exports the public names (a test asserts the list).
"""

# --- manifests (kurma/aci/_names.py, _manifest*.py, _isolators.py) ---------------------------

# --- image IDs and archives (kurma/aci/_ids.py, _archive.py, _unpack.py, _build.py) ------------
