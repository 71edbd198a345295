"""bamsprod core: binary layers, models, data sets, optimizers, metrics and the trainer, and
the registry (``core.plugins``) that names them, built-ins and installed plugins alike.

Importable with torch alone; nothing here imports ``app`` or ``worker``.
"""

__version__ = "0.1.0"
