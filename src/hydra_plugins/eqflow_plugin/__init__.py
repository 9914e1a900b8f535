"""eqflow's Hydra plugin. Hydra imports every module of the ``hydra_plugins`` namespace when it
starts, so any Hydra app (or ``hydra.compose``) in an environment where eqflow is installed has
the resolvers eqflow's configs use, ``${claim_run_dir:...}`` and ``${evaluated:...}``, without
importing eqflow itself. The run-folder and sweep callbacks are named in conf/hydra/default.yaml
(``eqflow.hydra_callbacks``); a new script gets them with ``- hydra: default`` in its defaults."""

from eqflow.io.run_folders import register_resolvers

register_resolvers()
