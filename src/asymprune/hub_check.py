"""Model ids of the workflow config: whether each ``models.<size>.name_or_path`` can be a model.

Two questions, asked at different times (pure Python, no torch; huggingface_hub is imported
only when asked):

- :func:`hub_id_problem`: is it an existing local folder or a hub id huggingface_hub's own
  validator accepts? No network; ``workflow_config.load`` asks it for every model entry.
- :func:`check_hub_models`: can each hub id be loaded, from the local cache or the hub (one
  metadata call per id)? A network question: ``common.smk`` asks it once per run, in the
  process that plans it, and a real run stops before any job when an id is not on the hub or
  could not be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def hub_id_problem(name_or_path: str) -> str | None:
    """Why ``name_or_path`` is neither an existing local folder nor a valid hub id, or None."""
    if Path(name_or_path).is_dir():
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError as e:
        return f"{name_or_path!r} is neither an existing local folder nor a valid hub id ({e})"
    return None


def hub_model_ids(models: dict) -> dict[str, list[str]]:
    """The hub ids among ``models.<size>.name_or_path`` (local folders left out), each with the
    config keys that name it."""
    ids: dict[str, list[str]] = {}
    for size, spec in models.items():
        name = spec.get("name_or_path")
        if name is not None and not Path(name).is_dir():
            ids.setdefault(name, []).append(f"models.{size}.name_or_path")
    return ids


# Seconds to wait for the hub's answer. Only the first failure waits: after it the other ids
# are reported unchecked without asking again.
HUB_TIMEOUT_S = 10.0


@dataclass
class HubCheck:
    """Hub ids of a config, one line each naming the id and its config key(s)."""

    missing: list[str] = field(default_factory=list)     # the hub says they are not there
    unchecked: list[str] = field(default_factory=list)   # not cached, and the hub did not answer


def check_hub_models(models: dict, timeout: float = HUB_TIMEOUT_S) -> HubCheck:
    """Whether each hub id of ``models`` can be loaded: in the local cache (what the stages load
    with HF_HUB_OFFLINE=1), or else on the hub, asked with one metadata call (``model_info``)."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    check, reachable = HubCheck(), True
    for repo_id, keys in hub_model_ids(models).items():
        where = f"  {repo_id} (config key {', '.join(keys)})"
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            continue   # downloaded before: the stages load it from the local cache
        if constants.HF_HUB_OFFLINE:
            check.unchecked.append(f"{where}: HF_HUB_OFFLINE is set and the local cache "
                                   f"({constants.HF_HUB_CACHE}) does not have it")
        elif not reachable:
            check.unchecked.append(f"{where}: not asked, the hub did not answer before")
        else:
            try:
                model_info(repo_id, timeout=timeout)
            except GatedRepoError:
                check.missing.append(f"{where}: a gated model; accept its terms on the hub and "
                                     f"set HF_TOKEN")
            except RepositoryNotFoundError:
                check.missing.append(f"{where}: the hub has no such model (or a private one: "
                                     f"set HF_TOKEN)")
            # no network, a proxy, a timeout, a hub outage: the HTTP client's own errors, whose
            # classes differ between huggingface_hub versions
            except Exception as e:
                reachable = False
                check.unchecked.append(f"{where}: could not reach the hub "
                                       f"({type(e).__name__}: {e})")
    return check
