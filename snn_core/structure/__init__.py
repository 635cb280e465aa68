"""Evolutionary structure learning: sparse initialisation, rewiring, history.

- :mod:`.init`: per-layer densities from one global density (Erdős–Rényi,
  ERK, uniform) and :func:`sparse_init` for a whole network;
- :mod:`.rewiring`: prune/grow rules, the zeta schedule, the pure CSR event
  :func:`rewire_csr` and the :class:`Rewirer` a training loop calls;
- :mod:`.history`: :class:`RewiringHistory`, what each event did and the
  turnover of connections.

See ``docs/structure-learning.md``.
"""
from .history import COLUMNS, RewiringHistory
from .init import (INIT_METHODS, connection_counts, erdos_renyi_densities, erk_densities, layer_densities,
                   mlp_densities, position_keys, random_structure, sample_empty_in_rows, sparse_init,
                   uniform_densities)
from .rewiring import (DECAYS, GROW_RULES, NEW_WEIGHTS, PRUNE_RULES, Rewirer, apportion, default_t_end,
                       grow_gradient, grow_momentum, grow_random, largest, prune_gradient, prune_magnitude,
                       prune_set, remove_connections, rewire_csr, rewire_layer, row_mean_abs, smallest,
                       zeta_schedule)

__all__ = [
    "COLUMNS", "RewiringHistory", "INIT_METHODS", "connection_counts", "erdos_renyi_densities", "erk_densities",
    "layer_densities", "mlp_densities", "position_keys", "random_structure", "sample_empty_in_rows",
    "sparse_init", "uniform_densities", "DECAYS", "GROW_RULES", "NEW_WEIGHTS", "PRUNE_RULES", "Rewirer",
    "apportion", "default_t_end", "grow_gradient", "grow_momentum", "grow_random", "largest", "prune_gradient",
    "prune_magnitude", "prune_set", "remove_connections", "rewire_csr", "rewire_layer", "row_mean_abs",
    "smallest", "zeta_schedule",
]
