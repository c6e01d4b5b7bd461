"""Rules of the code's shape, checked on the source tree (no database needed)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "contact_sync"

# Calls that open, begin or end a transaction (on an Engine or a Connection). A savepoint
# (``begin_nested``) is not one: a service may use it inside its caller's transaction.
TRANSACTION_CALLS = frozenset({"begin", "connect", "commit", "rollback"})

# The only modules that may make them, and why. Everything else is a service: it takes
# the connection of its caller's unit of work and never begins, commits or rolls back.
ENTRY_POINTS = {
    # The unit of work itself, the engine's per-connection setup (a DBAPI commit of
    # SET TIME ZONE), and schema migrations (Alembic runs its own transactions).
    "db/unit_of_work.py": "the unit of work",
    "db/engine.py": "connection setup",
    "db/migrate.py": "migrations",
    "db/migrations/env.py": "migrations",
    # HTTP entry points: each route (and the key check before it) opens its unit.
    "api/routes.py": "HTTP routes",
    "api/dead_letter_routes.py": "HTTP routes",
    "api/policy_routes.py": "HTTP routes",
    "api/field_routes.py": "HTTP routes",
    "api/upsert_routes.py": "HTTP routes",
    "api/auth.py": "the key check and its last-used touch",
    "api/readiness.py": "/readyz pings the database",
    # Command-line entry points.
    "cli/main.py": "CLI commands",
    "cli/events.py": "CLI commands",
    "cli/keys.py": "CLI commands",
    "cli/policy.py": "CLI commands",
    "cli/fields.py": "CLI commands",
    "cli/import_csv.py": "CLI commands",
    # Worker entry points: the tasks (apply, poison counting, parking) and the
    # consumer's parking of messages Celery cannot run.
    "worker/tasks.py": "Celery tasks",
    "worker/consumer.py": "the consumer's parking",
    # The demo drives its own database as an operator would.
    "cli/demo.py": "the demo",
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(), str(path))


def _transaction_calls(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in TRANSACTION_CALLS
        ):
            yield node.lineno, node.func.attr


def test_no_transaction_is_opened_outside_an_entry_point() -> None:
    found = [
        f"{name}:{line} .{attr}("
        for name, tree in _modules()
        if name not in ENTRY_POINTS
        for line, attr in _transaction_calls(tree)
    ]
    assert found == [], "services must take their caller's connection: " + ", ".join(found)


def test_the_list_of_entry_points_names_only_modules_that_exist() -> None:
    names = {name for name, _ in _modules()}
    assert set(ENTRY_POINTS) <= names


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


_MUTATORS = frozenset({"update", "pop", "popitem", "clear", "setdefault", "__setitem__"})


def _environment_writes(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Each write to the process environment: (line, the variable or the call)."""
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript) and _is_os_environ(target.value):
                key = target.slice
                yield node.lineno, key.value if isinstance(key, ast.Constant) else "?"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr in _MUTATORS and _is_os_environ(func.value):
                yield node.lineno, f"os.environ.{func.attr}()"
            if func.attr in ("putenv", "unsetenv") and isinstance(func.value, ast.Name):
                yield node.lineno, f"{func.value.id}.{func.attr}()"


# Settings travel as values (``create_app(settings)``, ``command_settings(args)``), never
# through the environment. Two writes remain, for libraries that read nothing else:
ENVIRONMENT_WRITES = {
    # prometheus-client picks its multiprocess storage from this variable only, when
    # it is first imported; the worker's pool children inherit it.
    ("cli/events.py", "PROMETHEUS_MULTIPROC_DIR"),
}
# The demo scrubs the whole environment for its duration (and restores it): Celery
# itself reads CELERY_BROKER_URL from it, which would reach a deployment's broker.
ENVIRONMENT_SCRUBBERS = frozenset({"cli/demo.py"})


def test_no_module_configures_itself_through_the_environment() -> None:
    found = [
        f"{name}:{line} {what}"
        for name, tree in _modules()
        if name not in ENVIRONMENT_SCRUBBERS
        for line, what in _environment_writes(tree)
        if (name, what) not in ENVIRONMENT_WRITES
    ]
    assert found == [], "pass settings as values: " + ", ".join(found)


def test_the_environment_rules_see_the_writes_they_allow() -> None:
    writes = {(name, what) for name, tree in _modules() for _, what in _environment_writes(tree)}
    assert writes >= ENVIRONMENT_WRITES
    assert any(name in ENVIRONMENT_SCRUBBERS for name, _ in writes)


# The dependency rule of docs/design.md §10: imports point inward.
KERNEL = ("settings.py", "clock.py", "ids.py", "errors.py", "logs.py", "storable.py")
PURE_DOMAIN = (
    "contacts/model.py",
    "contacts/phones.py",
    "contacts/lead_status.py",
    "contacts/records.py",
    "calls/events.py",
    "calls/merge.py",
    "calls/ledger.py",
    "scheduling/numbers.py",
    "scheduling/policy.py",
    "fields/definitions.py",
    "fields/coerce.py",
    "fields/patterns.py",
    "fields/schema.py",
    "fields/filters.py",
    "contacts/csv_rows.py",
    "scheduling/jurisdictions.py",
    "scheduling/eligibility.py",
)
INFRASTRUCTURE = ("sqlalchemy", "psycopg", "celery", "kombu", "redis", "fastapi", "starlette")
OUTER_PACKAGES = ("db", "worker", "api", "cli", "ops")


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, at the top or inside a function."""
    tree = ast.parse((SRC / name).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _package_modules(found: set[str]) -> set[str]:
    return {m for m in found if m == "contact_sync" or m.startswith("contact_sync.")}


def test_the_shared_kernel_imports_nothing_else_of_the_package() -> None:
    kernel = {f"contact_sync.{name.removesuffix('.py')}" for name in KERNEL}
    outward = {
        name: sorted(_package_modules(_imports(name)) - kernel)
        for name in KERNEL
        if _package_modules(_imports(name)) - kernel
    }
    assert outward == {}


def test_the_pure_domain_imports_no_infrastructure() -> None:
    def infrastructure(module: str) -> bool:
        top = module.split(".")[0]
        outer = module.split(".")[1] if top == "contact_sync" and "." in module else ""
        return top in INFRASTRUCTURE or outer in OUTER_PACKAGES

    outward = {
        name: sorted(m for m in _imports(name) if infrastructure(m))
        for name in PURE_DOMAIN
        if any(infrastructure(m) for m in _imports(name))
    }
    assert outward == {}
