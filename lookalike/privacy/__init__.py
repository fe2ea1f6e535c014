"""What keeps people's data in bounds at every stage: proxy checks of allowed features against denied
columns (``proxies``), opt-out suppression (``suppression``), the right to erasure on a built
workdir (``erasure``) and platform-normalized hashed identifiers for exports (``hashing``).
"""
