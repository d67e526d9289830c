"""Which driver updates a Component, and the per-Component plugin manager that calls it.

Resolution of a Topology ``interface: NAME`` (SPEC 9):

1. an executable file ``<data dir>/interfaces/v1/NAME``: wrapped by the ``exec`` driver
   (the Mender way, so an integrator's file always takes effect);
2. else an in-process driver registered under NAME in the entry-point group
   ``mender_orchestrator.drivers``, loaded with stevedore;
3. else a ``DriverNotFound`` error listing both kinds of what is available.

A driver entry point names a factory: ``factory(component: Component) -> object``, returning
an object whose methods are marked with ``orchestrator_core.hookspecs.hookimpl``. It may carry
an ``extra_hookspecs`` attribute (a module or class of ``hookspec``-marked functions) for
extension points of its own, which plugins from the entry-point group
``mender_orchestrator.plugins`` implement. The factory validates ``component.interface_args``
and raises ``ConfigError`` naming the bad argument. Its ``driver_api`` attribute, a version
range, is checked against ``DRIVER_API_VERSION`` before it is called (api_version.py).

Entry points are only scanned when some interface is not an executable, so the common
all-executables System starts without importing stevedore.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import pluggy

from orchestrator_core import api_version, hookspecs, watchdog
from orchestrator_core.context import Component, InterfaceContext, RebootNeed
from orchestrator_core.errors import ConfigError, DriverNotFound, InterfaceError, OrchestratorError
from orchestrator_core.retry import call_with_retries

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

DRIVER_GROUP = "mender_orchestrator.drivers"
PLUGIN_GROUP = "mender_orchestrator.plugins"
# Components called at once (queries while planning, one state of a step): more wait for a
# free slot. Enough for a group of a hundred slow Interfaces to run side by side.
MAX_PARALLEL_CALLS = 128
# Open files one call may need: pipes, pidfd, the Artifact, the streams tree (with room to spare)
DESCRIPTORS_PER_CALL = 12
DESCRIPTORS_KEPT = 64  # for everything else: the journal, logs, the lock, Python itself

MAX_ID_BYTES = 255  # NAME_MAX: the longest file name Linux file systems take
EXCERPT_CHARACTERS = 40  # of an Interface's answer quoted in a message

log = logging.getLogger("mender_orchestrator.drivers")

T = TypeVar("T")
R = TypeVar("R")


class Resolution(NamedTuple):
    """What one Topology ``interface`` name resolves to."""

    interface: str
    kind: str  # "executable" or "driver"
    target: str  # the executable's path, or the entry point's "module:attr"


def interfaces_dir(data_dir: Path) -> Path:
    return data_dir / "interfaces" / "v1"


def installed_executables(data_dir: Path) -> list[str]:
    directory = interfaces_dir(data_dir)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file() and os.access(p, os.X_OK))


def installed_drivers() -> dict[str, str]:
    """Every registered in-process driver: name -> ``module:attr``."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=DRIVER_GROUP)}


def resolve(interface: str, data_dir: Path) -> Resolution:
    executable = interfaces_dir(data_dir) / interface
    if "/" in interface or interface in ("", ".", ".."):
        raise DriverNotFound(f"interface name {interface!r} is not a plain file name")
    if executable.is_file():
        if not os.access(executable, os.X_OK):
            raise DriverNotFound(
                f"Interface {interface!r}: {executable} exists but is not executable "
                f"(chmod +x it, or remove it to use an in-process driver)"
            )
        return Resolution(interface, "executable", str(executable))
    drivers = installed_drivers()
    if interface in drivers:
        return Resolution(interface, "driver", drivers[interface])
    raise DriverNotFound(
        f"Interface {interface!r} not found: no executable {executable} and no driver "
        f"{interface!r} in the entry-point group {DRIVER_GROUP}. "
        f"Executables available: {', '.join(installed_executables(data_dir)) or 'none'}; "
        f"drivers available: {', '.join(sorted(drivers)) or 'none'}"
    )


def load_factory(name: str) -> Callable[[Component], object]:
    from stevedore import driver

    try:
        manager: Any = driver.DriverManager(namespace=DRIVER_GROUP, name=name, invoke_on_load=False)
    except Exception as exc:  # stevedore wraps import errors of the vendor package
        raise DriverNotFound(f"driver {name!r} could not be loaded: {exc}") from exc
    factory: Callable[[Component], object] = manager.driver
    return factory


_global_plugins: list[object] | None = None


def global_plugins() -> list[object]:
    """Plugins from ``mender_orchestrator.plugins`` (vendor extensions), loaded once."""
    global _global_plugins
    if _global_plugins is None:
        from stevedore import extension

        def _failed(_manager: object, entry_point: Any, exc: BaseException) -> None:
            log.warning("plugin %s could not be loaded: %s", entry_point.name, exc)

        manager: Any = extension.ExtensionManager(
            namespace=PLUGIN_GROUP, invoke_on_load=False, on_load_failure_callback=_failed
        )
        _global_plugins = [ext.plugin for ext in manager]
    return _global_plugins


def parallel_calls() -> int:
    """How many Components to call at once: ``MAX_PARALLEL_CALLS``, or fewer if the limit on
    open files (raised towards its hard limit first) would not hold that many calls; a call
    failing with "too many open files" would roll a whole System back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_PARALLEL_CALLS * DESCRIPTORS_PER_CALL + DESCRIPTORS_KEPT
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return MAX_PARALLEL_CALLS
    return max(1, min(MAX_PARALLEL_CALLS, (soft - DESCRIPTORS_KEPT) // DESCRIPTORS_PER_CALL))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def in_parallel(work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` done on every item, up to ``parallel_calls()`` at once; results in order.

    The threads stay for the process's next batch: planning and every state of a step would
    otherwise start a hundred threads each for a large System, which costs more than calling
    a quick Interface.
    """
    global _pool
    if len(items) == 1:
        return [work(items[0])]
    with _pool_lock:
        if _pool is None:
            # imported here: a System of one Component (and every query of one) needs no pool
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(parallel_calls(), thread_name_prefix="component")
    return list(_pool.map(work, items))


def wind_down() -> None:
    """After a stop signal: wait for the calls already running (stopped, they end quickly),
    drop those not yet started."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which attributes of a class are hooks.

    pluggy inspects every attribute of a plugin (and of a hookspec module) each time one is
    registered; a System of hundreds of Components registers the same few classes hundreds of
    times, which made planning cost a millisecond per Component. The answer only depends on the
    class, except for attributes set on the instance itself, which are still inspected.
    """

    _impl_opts: dict[tuple[type, str], pluggy.HookimplOpts | None] = {}
    _spec_opts: dict[tuple[object, str], pluggy.HookspecOpts | None] = {}

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if isinstance(plugin, (type, ModuleType)) or name in getattr(plugin, "__dict__", ()):
            return super().parse_hookimpl_opts(plugin, name)
        key = (type(plugin), name)
        if key not in self._impl_opts:
            self._impl_opts[key] = super().parse_hookimpl_opts(plugin, name)
        return self._impl_opts[key]

    def parse_hookspec_opts(
        self, module_or_class: ModuleType | type, name: str
    ) -> pluggy.HookspecOpts | None:
        key = (module_or_class, name)
        if key not in self._spec_opts:
            self._spec_opts[key] = super().parse_hookspec_opts(module_or_class, name)
        return self._spec_opts[key]


def _plugin_manager(
    plugin: object, extra_plugins: Iterable[object], component: Component, resolution: Resolution
) -> pluggy.PluginManager:
    """A plugin manager holding ``plugin`` as "driver", then the ``extra_plugins``."""
    pm = _PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    extra_specs = getattr(plugin, "extra_hookspecs", None)
    if extra_specs is not None:
        pm.add_hookspecs(extra_specs)
    pm.register(plugin, name="driver")
    _check_hook_names(pm, component, resolution)  # before the global plugins: they serve all
    for extra in extra_plugins:
        if not pm.is_registered(extra):
            pm.register(extra)
    return pm


def _check_hook_names(
    pm: pluggy.PluginManager, component: Component, resolution: Resolution
) -> None:
    """A misspelt ``@hookimpl`` would make its state a silent no-op: refuse the driver."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        unknown = sorted(
            name
            for name, caller in vars(pm.hook).items()
            if not name.startswith("_") and not caller.has_spec()
        )
        known = sorted(
            name
            for name, caller in vars(pm.hook).items()
            if not name.startswith("_") and caller.has_spec()
        )
        raise ConfigError(
            f"{component.label}: driver {resolution.interface!r} "
            f"({resolution.target}) marks {', '.join(unknown)} with @hookimpl, but "
            f"no hook has that name (misspelt?); hooks are: {', '.join(known)}"
        ) from None


class ExecutableManagers:
    """One plugin manager per Interface executable, for the Components it updates.

    An in-process driver is made by its factory for one Component, so it gets a manager of
    its own. The ``exec`` driver of an executable found under ``interfaces/v1`` reads the
    Component from each call's context instead, so the Components of one executable can share
    it and its manager: making a manager and registering a driver in it cost about 0.3 ms of
    CPU, once per Component of a System of hundreds otherwise. Whoever loads a set of
    Components (one discovery, one deployment) keeps one of these for them; so does the
    observer it registers in their managers.
    """

    def __init__(self) -> None:
        self._managers: dict[str, pluggy.PluginManager] = {}
        self._lock = threading.Lock()

    def get(self, component: Component, resolution: Resolution) -> pluggy.PluginManager:
        with self._lock:
            pm = self._managers.get(resolution.target)
            if pm is None:
                pm = self._managers[resolution.target] = _exec_manager(component, resolution)
            return pm


def _exec_manager(component: Component, resolution: Resolution) -> pluggy.PluginManager:
    from orchestrator_core.exec_driver import ExecDriver

    return _plugin_manager(ExecDriver(Path(resolution.target)), (), component, resolution)


class ComponentDriver:
    """A Component, the plugin manager that calls its driver, and the protocol rules applied
    to the driver's answers. The manager is made here, holding ``plugin`` and the
    ``extra_plugins``, unless ``pm`` gives one that holds ``plugin`` already (shared by the
    Components of one executable: ``ExecutableManagers``)."""

    def __init__(
        self,
        component: Component,
        resolution: Resolution,
        plugin: object,
        extra_plugins: Iterable[object] = (),
        *,
        pm: pluggy.PluginManager | None = None,
    ) -> None:
        self.component = component
        self.resolution = resolution
        if pm is None:
            pm = _plugin_manager(plugin, extra_plugins, component, resolution)
        self.pm = pm
        # an in-process driver runs in our process: the engine holds its deadline for it
        self._watched = resolution.kind == "driver" and not getattr(
            plugin, "kills_at_deadline", False
        )
        # its Download serves the payload through a streams tree (filetree.make_streams)
        self.takes_streams_ahead = bool(getattr(plugin, "takes_streams_ahead", False))
        # it rolls back by reinstalling what ran before: the engine keeps that for it
        self.keeps_previous_artifact = resolution.kind == "driver" and bool(
            getattr(plugin, "keeps_previous_artifact", False)
        )

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    def context(self, **fields: Any) -> InterfaceContext:
        fields.setdefault("hook", self.pm.hook)
        return InterfaceContext(component=self.component, **fields)

    # ---- queries, with the protocol's defaults and checks

    def identity(self, ctx: InterfaceContext) -> str:
        answer = self._call("identity", ctx)
        if not answer:
            raise InterfaceError(f"{ctx.name}: the Identity query gave no id")
        component_id = str(answer)
        # the ID names a directory of the File API tree and a key of show-provides lines
        if component_id in (".", "..") or any(c in component_id for c in "/\0\n\r="):
            raise InterfaceError(
                f"{ctx.name}: the Identity query gave id={_excerpt(component_id)}; an id must "
                f"not be '.' or '..' nor contain '/', '=', NUL or line breaks"
            )
        size = len(component_id.encode("utf-8", "surrogateescape"))
        if size > MAX_ID_BYTES:
            raise InterfaceError(
                f"{ctx.name}: the Identity query gave an id of {size} bytes "
                f"({_excerpt(component_id)}); an id names a directory, so it may have at most "
                f"{MAX_ID_BYTES} bytes"
            )
        return component_id

    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        answer: dict[str, str] | None = self._call("provides", ctx)
        if answer is None:
            answer = {}
        result = dict(answer)
        for key, value in result.items():
            if any(c in f"{key}{value}" for c in "\0\n\r"):
                raise InterfaceError(
                    f"{ctx.name}: the Provides query gave {_excerpt(key)}={_excerpt(value)}, "
                    f"with NUL or a line break in it; Provides keys and values are single lines "
                    f"of text"
                )
        device_type = result.pop("device_type", None)
        if device_type is not None and device_type != self.component.component_type:
            ctx.log.warning(
                "%s reports device_type=%s but its component_type is %s; the component_type wins",
                ctx.name,
                device_type,
                self.component.component_type,
            )
        name = getattr(self.pm.get_plugin("driver"), "interface_name", self.component.interface)
        version_keys = (f"rootfs-image.{name}.version", "rootfs-image.version")
        if not any(key in result for key in version_keys):
            raise InterfaceError(
                f"{ctx.name}: the Provides query did not report "
                f"{version_keys[0]} (or {version_keys[1]} for the system device); "
                f"without it no Artifact can be deployed to this Component"
            )
        return result

    def inventory(self, ctx: InterfaceContext) -> list[tuple[str, str]]:
        answer = self._call("inventory", ctx)
        return list(answer or [])

    def needs_unpacked_artifact(self, ctx: InterfaceContext) -> bool:
        answer = self._call("needs_unpacked_artifact", ctx)
        return True if answer is None else bool(answer)

    def provide_payload_file_sizes(self, ctx: InterfaceContext) -> bool:
        return bool(self._call("provide_payload_file_sizes", ctx))

    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        answer = self._call("needs_artifact_reboot", ctx)
        try:
            return RebootNeed.NO if answer is None else RebootNeed(answer)
        except ValueError:
            raise InterfaceError(
                f"{ctx.name}: needs_artifact_reboot answered {answer!r}; expected a RebootNeed "
                f"(Yes, No or Automatic)"
            ) from None

    def supports_rollback(self, ctx: InterfaceContext) -> bool:
        return bool(self._call("supports_rollback", ctx))

    # ---- states

    def run_state(self, state: str, ctx: InterfaceContext) -> None:
        """Run a state hook by its snake_case name; raises ``InterfaceError`` on failure."""
        self._call(state, ctx)

    def _call(self, hook: str, ctx: InterfaceContext) -> Any:
        """Call one hook; a driver's bug becomes a failure of this Component, not a crash."""
        try:

            def call() -> Any:
                if self._watched:
                    return watchdog.call(
                        getattr(self.pm.hook, hook), hook, ctx, self.resolution.target
                    )
                return getattr(self.pm.hook, hook)(ctx=ctx)

            return call_with_retries(call, hook, ctx)
        except OrchestratorError:
            raise
        except Exception as exc:
            log.debug("driver %s raised in %s", self.resolution.target, hook, exc_info=True)
            raise InterfaceError(
                f"{ctx.name}: {hook} failed: driver {self.resolution.target} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def load(
    component: Component, data_dir: Path, shared: ExecutableManagers | None = None
) -> ComponentDriver:
    """Resolve and instantiate the driver for one Component; an executable's plugin manager
    comes from ``shared`` when given (see ``ExecutableManagers``)."""
    resolution = resolve(component.interface, data_dir)
    if resolution.kind == "executable":
        managers = shared if shared is not None else ExecutableManagers()
        pm = managers.get(component, resolution)
        return ComponentDriver(component, resolution, pm.get_plugin("driver"), pm=pm)
    factory = load_factory(component.interface)
    who = f"{component.interface!r} ({resolution.target})"
    declared = getattr(factory, api_version.ATTRIBUTE, None)
    api_version.check_driver(declared, who, component.label)
    try:
        plugin = factory(component)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{component.label}: driver {component.interface!r} refused its interface_args "
            f"{list(component.interface_args)}: {exc}"
        ) from exc
    if declared is None:  # a factory function may leave the declaration to its product
        api_version.check_driver(
            getattr(plugin, api_version.ATTRIBUTE, None), who, component.label
        )
    return ComponentDriver(component, resolution, plugin, global_plugins())


def _excerpt(text: str) -> str:
    """``text`` quoted for a message, cut short: an Interface's answer may be of any size."""
    if len(text) <= EXCERPT_CHARACTERS:
        return repr(text)
    return f"{text[:EXCERPT_CHARACTERS]!r}... ({len(text)} characters)"
