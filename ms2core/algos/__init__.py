"""Learning algorithms, one readable file each (config in storage_schemas, pure losses at the top, loop below).

Online RL: ``ppo``, ``dapg``, ``sac``, ``gail`` (each exposes ``train_<algo>(cfg, sink=None)``).
"""
