"""``ai-secretary-schema lint``: each revision reviewed for lock safety on a live PostgreSQL
database, as the offline SQL of its own step.

Every fixture history is the shipped revisions (0001 creates ``tenants`` and ``users``, 0002
``performance_alerts``, with rows in production, 0003 row-level security) plus revisions 0101,
0102 … built in
``tmp_path``. A rule fires on a table an earlier revision created; the same operation on a table
the revision creates itself is clean.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from helpers.scripts import HEAD, SHIPPED, make_script_dir

from ai_secretary_schema.cli import main
from ai_secretary_schema.errors import MigrationError, RevisionRangeError
from ai_secretary_schema.lint import RULES, LintReport, lint
from ai_secretary_schema.migrator import Migrator
from ai_secretary_schema.settings import SchemaSettings

#: The lint reads only whether downgrade() does something: the fixtures are never downgraded.
UNDO = 'op.execute("SELECT 1")'


def revision(upgrade: str, *, downgrade: str = UNDO, top: str = "") -> str:
    """A revision body: ``top`` (module level), then ``upgrade()`` and ``downgrade()``."""
    indent = "    "
    return (
        f"{top}\n\n"
        f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), indent)}\n\n\n"
        f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), indent)}\n"
    )


def history(root: Path, *bodies: str) -> Path:
    """The shipped revisions, then ``bodies`` as 0101, 0102 …, each on the one before."""
    extra: dict[str, tuple[str | None, str]] = {}
    down = HEAD
    for number, body in enumerate(bodies, start=101):
        extra[f"{number:04d}"] = (down, body)
        down = f"{number:04d}"
    return make_script_dir(root, extra)


def errors(report: LintReport) -> list[tuple[str, str, str]]:
    """``(rule, revision, statement)`` of each failing finding."""
    return [(f.rule, f.revision, f.statement) for f in report.errors]


def failing_rules(report: LintReport) -> list[str]:
    return [finding.rule for finding in report.errors]


# -- one case per rule: the unsafe revision, the statement it names, the safe way --------------

CONCURRENT_INDEX = """
with op.get_context().autocommit_block():
    op.create_index("ix_users_full_name", "users", ["full_name"], postgresql_concurrently=True)
"""
NOT_VALID_CHECK = """
op.create_check_constraint(
    "role_known", "users", "role IN ('member', 'admin')", postgresql_not_valid=True
)
"""
VALIDATE_CHECK = 'op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_role_known")'
PLAIN = revision('op.add_column("users", sa.Column("bio", sa.Text()))')
ALERT_TENANT = 'op.add_column("performance_alerts", sa.Column("tenant_id", sa.Integer()))'

CASES = [
    pytest.param(
        "create-index-non-concurrently",
        [revision('op.create_index("ix_users_full_name", "users", ["full_name"])')],
        "CREATE INDEX ix_users_full_name ON users (full_name)",
        [revision(CONCURRENT_INDEX)],
        id="create-index",
    ),
    pytest.param(
        "drop-index-non-concurrently",
        [revision('op.drop_index("ix_users_tenant_id", table_name="users")')],
        "DROP INDEX ix_users_tenant_id",
        [
            revision(
                """
                with op.get_context().autocommit_block():
                    op.drop_index(
                        "ix_users_tenant_id", table_name="users", postgresql_concurrently=True
                    )
                """
            )
        ],
        id="drop-index",
    ),
    pytest.param(
        "concurrently-in-transaction",
        [
            revision(
                'op.create_index("ix_users_full_name", "users", ["full_name"], '
                "postgresql_concurrently=True)"
            )
        ],
        "CREATE INDEX CONCURRENTLY ix_users_full_name ON users (full_name)",
        [revision(CONCURRENT_INDEX)],
        id="concurrently-in-transaction",
    ),
    pytest.param(
        "add-column-not-null-without-default",
        [revision('op.add_column("users", sa.Column("nickname", sa.String(50), nullable=False))')],
        "ALTER TABLE users ADD COLUMN nickname VARCHAR(50) NOT NULL",
        [
            revision(
                'op.add_column("users", sa.Column("nickname", sa.String(50), '
                'server_default="", nullable=False))'
            )
        ],
        id="add-not-null-column",
    ),
    pytest.param(
        "add-column-volatile-default",
        [
            revision(
                'op.add_column("users", sa.Column("public_id", sa.Uuid(), '
                'server_default=sa.text("gen_random_uuid()")))'
            )
        ],
        "ALTER TABLE users ADD COLUMN public_id UUID DEFAULT gen_random_uuid()",
        [
            revision(
                """
                op.add_column("users", sa.Column("public_id", sa.Uuid()))
                op.alter_column(
                    "users", "public_id", server_default=sa.text("gen_random_uuid()")
                )
                """
            )
        ],
        id="volatile-default",
    ),
    pytest.param(
        "set-not-null",
        [revision('op.alter_column("users", "full_name", nullable=False)')],
        "ALTER TABLE users ALTER COLUMN full_name SET NOT NULL",
        [
            revision(
                'op.create_check_constraint("full_name_set", "users", "full_name IS NOT NULL", '
                "postgresql_not_valid=True)"
            ),
            revision(
                """
                op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_full_name_set")
                op.alter_column("users", "full_name", nullable=False)
                op.drop_constraint("full_name_set", "users", type_="check")
                """
            ),
        ],
        id="set-not-null",
    ),
    pytest.param(
        "add-foreign-key-validated",
        [
            revision(
                f"""
                {ALERT_TENANT}
                op.create_foreign_key(
                    None, "performance_alerts", "tenants", ["tenant_id"], ["id"]
                )
                """
            )
        ],
        "ALTER TABLE performance_alerts ADD CONSTRAINT fk_performance_alerts_tenant_id_tenants "
        "FOREIGN KEY(tenant_id) REFERENCES tenants (id)",
        [
            revision(
                f"""
                {ALERT_TENANT}
                op.create_foreign_key(
                    None, "performance_alerts", "tenants", ["tenant_id"], ["id"],
                    postgresql_not_valid=True,
                )
                """
            ),
            revision(
                'op.execute("ALTER TABLE performance_alerts VALIDATE CONSTRAINT '
                'fk_performance_alerts_tenant_id_tenants")'
            ),
        ],
        id="foreign-key",
    ),
    pytest.param(
        "add-check-validated",
        [revision('op.create_check_constraint("role_known", "users", "role IN (\'member\')")')],
        "ALTER TABLE users ADD CONSTRAINT ck_users_role_known CHECK (role IN ('member'))",
        [revision(NOT_VALID_CHECK), revision(VALIDATE_CHECK)],
        id="check",
    ),
    pytest.param(
        "validate-in-same-transaction",
        [revision(NOT_VALID_CHECK + VALIDATE_CHECK)],
        "ALTER TABLE users VALIDATE CONSTRAINT ck_users_role_known",
        [revision(NOT_VALID_CHECK), revision(VALIDATE_CHECK)],
        id="validate-in-same-transaction",
    ),
    pytest.param(
        "add-unique-constraint",
        [revision('op.create_unique_constraint(None, "users", ["email"])')],
        "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)",
        [
            revision(
                """
                with op.get_context().autocommit_block():
                    op.create_index(
                        "uq_users_email", "users", ["email"], unique=True,
                        postgresql_concurrently=True,
                    )
                op.execute(
                    "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX "
                    "uq_users_email"
                )
                """
            )
        ],
        id="unique",
    ),
    pytest.param(
        "change-column-type",
        [
            revision(
                'op.alter_column("performance_alerts", "occurrence_count", '
                "existing_type=sa.Integer(), type_=sa.BigInteger())"
            )
        ],
        "ALTER TABLE performance_alerts ALTER COLUMN occurrence_count TYPE BIGINT",
        [
            revision(
                'op.add_column("performance_alerts", sa.Column("occurrences", sa.BigInteger()))'
            )
        ],
        id="column-type",
    ),
    pytest.param(
        "rename-column",
        [revision('op.alter_column("users", "full_name", new_column_name="display_name")')],
        "ALTER TABLE users RENAME full_name TO display_name",
        [revision('op.add_column("users", sa.Column("display_name", sa.String(200)))')],
        id="rename-column",
    ),
    pytest.param(
        "rename-table",
        [revision('op.rename_table("performance_alerts", "alerts")')],
        "ALTER TABLE performance_alerts RENAME TO alerts",
        [revision('op.create_table("alerts", sa.Column("id", sa.Integer(), primary_key=True))')],
        id="rename-table",
    ),
    pytest.param(
        "drop-column",
        [revision('op.drop_column("users", "last_login_at")')],
        "ALTER TABLE users DROP COLUMN last_login_at",
        [
            revision(
                'op.drop_column("users", "last_login_at")',
                top='lint_ignore = {"drop-column": "unused since release 2026.10"}',
            )
        ],
        id="drop-column",
    ),
    pytest.param(
        "drop-table",
        [revision('op.drop_table("performance_alerts")')],
        "DROP TABLE performance_alerts",
        [
            revision(
                'op.drop_table("performance_alerts")',
                top='lint_ignore = {"drop-table": "replaced by alerts in release 2026.10"}',
            )
        ],
        id="drop-table",
    ),
    pytest.param(
        "missing-downgrade",
        [revision('op.add_column("users", sa.Column("bio", sa.Text()))', downgrade="pass")],
        "def downgrade()",
        [
            revision(
                'op.add_column("users", sa.Column("bio", sa.Text()))',
                downgrade='op.drop_column("users", "bio")',
            )
        ],
        id="missing-downgrade",
    ),
]


def test_every_error_rule_has_a_case() -> None:
    covered = {case.values[0] for case in CASES}
    suppression = {"suppression-without-reason", "unused-suppression"}
    error_rules = {r.id for r in RULES.values() if r.severity == "error"}

    assert error_rules - suppression == covered


@pytest.mark.parametrize(("rule", "unsafe", "statement", "safe"), CASES)
def test_an_unsafe_revision_is_found_with_its_rule_revision_and_statement(
    tmp_path: Path, rule: str, unsafe: list[str], statement: str, safe: list[str]
) -> None:
    assert errors(lint(script_location=history(tmp_path, *unsafe))) == [(rule, "0101", statement)]


@pytest.mark.parametrize(("rule", "unsafe", "statement", "safe"), CASES)
def test_the_safe_way_is_clean(
    tmp_path: Path, rule: str, unsafe: list[str], statement: str, safe: list[str]
) -> None:
    assert errors(lint(script_location=history(tmp_path, *safe))) == []


@pytest.mark.parametrize(("rule", "unsafe", "statement", "safe"), CASES)
def test_each_finding_says_the_lock_and_the_safe_way(
    tmp_path: Path, rule: str, unsafe: list[str], statement: str, safe: list[str]
) -> None:
    (finding,) = lint(script_location=history(tmp_path, *unsafe)).errors

    assert (finding.safe, finding.to_dict()["lock"]) == (RULES[rule].safe, RULES[rule].lock)


def test_the_shipped_history_is_clean() -> None:
    report = lint()

    assert (report.revisions, report.findings) == (SHIPPED, ())


def test_lint_never_reads_the_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 1: a connection attempt would fail the run.
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")

    assert lint().ok


def test_a_revision_that_cannot_emit_offline_sql_is_an_error_naming_where(
    tmp_path: Path,
) -> None:
    body = revision('op.get_bind().execute(sa.text("SELECT count(*) FROM users")).scalar()')

    with pytest.raises(MigrationError, match=rf"revision after {HEAD} .*is_offline_mode"):
        lint(script_location=history(tmp_path, body))


def test_an_env_py_that_drops_the_step_callback_offline_is_an_error(tmp_path: Path) -> None:
    scripts = history(tmp_path, PLAIN)
    env = scripts / "env.py"
    env.write_text(
        env.read_text().replace(
            "offline_options(settings, context.config)", "offline_options(settings)"
        )
    )

    with pytest.raises(MigrationError, match="does not pass on_version_apply in offline mode"):
        lint(script_location=scripts)


# -- a table created in the same revision is exempt ------------------------------------------

NEW_TABLE = """
op.create_table(
    "notes",
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("user_id", sa.Integer()),
    sa.Column("body", sa.String(200)),
    sa.Column("rank", sa.Integer()),
)
"""


@pytest.mark.parametrize(
    "operation",
    [
        'op.create_index("ix_notes_body", "notes", ["body"])',
        'op.create_index("ix_notes_body", "notes", ["body"])\n'
        'op.drop_index("ix_notes_body", table_name="notes")',
        'op.add_column("notes", sa.Column("title", sa.String(50), nullable=False))',
        'op.add_column("notes", sa.Column("key", sa.Uuid(), '
        'server_default=sa.text("gen_random_uuid()")))',
        'op.alter_column("notes", "body", nullable=False)',
        'op.create_foreign_key(None, "notes", "users", ["user_id"], ["id"])',
        'op.create_check_constraint("rank_positive", "notes", "rank > 0")',
        'op.create_unique_constraint(None, "notes", ["body"])',
        'op.alter_column("notes", "rank", type_=sa.BigInteger())',
        'op.alter_column("notes", "body", new_column_name="text")',
        'op.rename_table("notes", "user_notes")\n'
        'op.create_index("ix_user_notes_body", "user_notes", ["body"])',
        'op.drop_column("notes", "rank")',
        'op.drop_table("notes")',
    ],
    ids=[
        "create-index",
        "drop-index",
        "add-not-null-column",
        "volatile-default",
        "set-not-null",
        "foreign-key",
        "check",
        "unique",
        "column-type",
        "rename-column",
        "rename-table-then-index",
        "drop-column",
        "drop-table",
    ],
)
def test_the_same_operation_on_a_table_created_in_the_same_revision_is_clean(
    tmp_path: Path, operation: str
) -> None:
    scripts = history(tmp_path, revision(NEW_TABLE + operation))

    assert errors(lint(script_location=scripts)) == []


def test_a_table_created_by_an_earlier_revision_is_not_exempt(tmp_path: Path) -> None:
    scripts = history(
        tmp_path,
        revision(NEW_TABLE),
        revision('op.create_index("ix_notes_body", "notes", ["body"])'),
    )

    assert failing_rules(lint(script_location=scripts)) == ["create-index-non-concurrently"]


# -- transactions: CONCURRENTLY needs autocommit_block() -------------------------------------


def test_concurrently_inside_autocommit_block_after_a_plain_revision_is_clean(
    tmp_path: Path,
) -> None:
    assert errors(lint(script_location=history(tmp_path, PLAIN, revision(CONCURRENT_INDEX)))) == []


def test_concurrently_after_the_autocommit_block_is_back_in_a_transaction(tmp_path: Path) -> None:
    body = revision(
        CONCURRENT_INDEX + 'op.create_index("ix_users_role", "users", ["role"], '
        "postgresql_concurrently=True)"
    )

    assert errors(lint(script_location=history(tmp_path, PLAIN, body))) == [
        (
            "concurrently-in-transaction",
            "0102",
            "CREATE INDEX CONCURRENTLY ix_users_role ON users (role)",
        )
    ]


def test_validating_after_an_autocommit_block_is_another_transaction(tmp_path: Path) -> None:
    body = revision(
        NOT_VALID_CHECK
        + 'with op.get_context().autocommit_block():\n    op.execute("SELECT 1")\n'
        + VALIDATE_CHECK
    )

    assert errors(lint(script_location=history(tmp_path, body))) == []


def test_a_literal_is_never_read_as_sql(tmp_path: Path) -> None:
    body = revision(
        'op.add_column("users", sa.Column("motto", sa.String(50), '
        'server_default="DROP TABLE users; CREATE INDEX x ON users (id)", nullable=False))'
    )

    assert errors(lint(script_location=history(tmp_path, body))) == []


# -- suppressions ----------------------------------------------------------------------------

DROP_LOGIN = 'op.drop_column("users", "last_login_at")'


@pytest.mark.parametrize(
    ("lint_ignore", "expected"),
    [
        ('{"drop-column": "unused since release 2026.10"}', []),
        ('{"drop-column": ""}', ["drop-column", "suppression-without-reason"]),
        ('{"drop-column": None}', ["drop-column", "suppression-without-reason"]),
        ('["drop-column"]', ["drop-column", "suppression-without-reason"]),
        (
            '{"drop-column": "unused", "drop-table": "unused"}',
            ["unused-suppression"],
        ),
        ('{"drop-column": "unused", "no-such-rule": "x"}', ["unused-suppression"]),
        (
            '{"drop-column": "unused", "unused-suppression": "x"}',
            ["unused-suppression"],
        ),
    ],
    ids=[
        "with-a-reason",
        "empty-reason",
        "no-reason",
        "not-a-dict",
        "rule-that-did-not-fire",
        "unknown-rule",
        "suppressing-the-suppression-rules",
    ],
)
def test_a_suppression_needs_a_reason_and_a_finding_to_suppress(
    tmp_path: Path, lint_ignore: str, expected: list[str]
) -> None:
    scripts = history(tmp_path, revision(DROP_LOGIN, top=f"lint_ignore = {lint_ignore}"))

    assert failing_rules(lint(script_location=scripts)) == expected


def test_a_suppression_applies_to_its_own_revision_only(tmp_path: Path) -> None:
    scripts = history(
        tmp_path,
        revision(
            'op.add_column("users", sa.Column("bio", sa.Text()))',
            top='lint_ignore = {"drop-column": "unused"}',
        ),
        revision(DROP_LOGIN),
    )

    assert [(f.rule, f.revision) for f in lint(script_location=scripts).errors] == [
        ("unused-suppression", "0101"),
        ("drop-column", "0102"),
    ]


# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision_range", "reviewed"),
    [
        (None, (*SHIPPED, "0101", "0102")),
        (f"{HEAD}:head", ("0101", "0102")),
        ("0101:head", ("0102",)),
        ("0101:", ("0102",)),
        ("base:0101", (*SHIPPED, "0101")),
        ("0101", ("0101",)),
    ],
)
def test_a_range_reviews_the_revisions_after_its_start_up_to_its_end(
    tmp_path: Path, revision_range: str | None, reviewed: tuple[str, ...]
) -> None:
    scripts = history(tmp_path, revision(DROP_LOGIN), PLAIN)

    report = lint(revision_range, script_location=scripts)

    assert (report.revisions, sorted({f.revision for f in report.findings})) == (
        reviewed,
        ["0101"] if "0101" in reviewed else [],
    )


@pytest.mark.parametrize("revision_range", ["0009", "0001:0009", "0009:head", "0002:0001"])
def test_an_unknown_revision_in_the_range_is_a_usage_error_listing_the_revisions(
    revision_range: str,
) -> None:
    with pytest.raises(
        RevisionRangeError, match=rf"the revisions are {', '.join(SHIPPED)}"
    ) as raised:
        lint(revision_range)

    assert raised.value.known == SHIPPED


# -- the command line ------------------------------------------------------------------------


def test_lint_exits_0_on_the_shipped_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint"]) == 0
    assert capsys.readouterr().out == f"lint: {len(SHIPPED)} revision(s) reviewed, no findings\n"


def test_lint_exits_1_listing_each_finding_with_its_safe_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = history(tmp_path, revision(DROP_LOGIN))

    assert main(["lint", "--script-location", str(scripts)]) == 1
    assert capsys.readouterr().out.splitlines()[::2] == [
        "0101 drop-column: ALTER TABLE users DROP COLUMN last_login_at",
        f"    safe: {RULES['drop-column'].safe}",
    ]


def test_lint_json_is_a_list_of_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = history(tmp_path, revision(DROP_LOGIN))

    assert main(["lint", "--json", "--script-location", str(scripts), f"{HEAD}:head"]) == 1
    (finding,) = json.loads(capsys.readouterr().out)
    assert {key: finding[key] for key in ("rule", "revision", "statement", "table")} == {
        "rule": "drop-column",
        "revision": "0101",
        "statement": "ALTER TABLE users DROP COLUMN last_login_at",
        "table": "users",
    }
    assert finding["message"].startswith("drops column last_login_at of users")


def test_lint_json_of_a_clean_history_is_an_empty_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["lint", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_lint_exits_2_on_an_unknown_revision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "0001:0009"]) == 2
    error = capsys.readouterr().err
    assert "0009" in error
    assert f"the revisions are {', '.join(SHIPPED)}" in error


# -- SQLite: batch mode copies a table --------------------------------------------------------

#: Sets the default users.role already has: nothing on PostgreSQL, a copy of users on SQLite.
BATCH_ALTER = """
with op.batch_alter_table("users") as batch:
    batch.alter_column("role", existing_type=sa.String(50), server_default=sa.text("'member'"))
"""


def test_a_sqlite_table_copy_is_information_not_a_failure(tmp_path: Path) -> None:
    report = lint(script_location=history(tmp_path, revision(BATCH_ALTER)))

    assert (report.ok, [(f.rule, f.severity, f.table) for f in report.findings]) == (
        True,
        [("sqlite-table-rebuild", "info", "users")],
    )


def test_a_sqlite_copy_of_a_table_created_in_the_same_revision_is_not_reported(
    tmp_path: Path,
) -> None:
    body = revision(
        NEW_TABLE
        + 'with op.batch_alter_table("notes") as batch:\n'
        + '    batch.alter_column("body", server_default="")\n'
    )

    assert lint(script_location=history(tmp_path, body)).findings == ()


def test_a_revision_that_cannot_run_on_sqlite_is_information(tmp_path: Path) -> None:
    scripts = history(tmp_path, revision(NOT_VALID_CHECK), revision(VALIDATE_CHECK))

    report = lint(script_location=scripts)

    assert (report.ok, [(f.rule, f.revision) for f in report.findings]) == (
        True,
        [("sqlite-not-reviewed", "0101")],
    )


# -- the gate: check runs the lint ----------------------------------------------------------


def test_check_fails_on_an_unsafe_revision_and_names_the_safe_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = history(tmp_path, revision('op.create_index("ix_users_role", "users", ["role"])'))

    assert main(["check", "--script-location", str(scripts)]) == 1
    out = capsys.readouterr().out
    assert "  - lint 0101 create-index-non-concurrently: CREATE INDEX ix_users_role" in out
    assert RULES["create-index-non-concurrently"].safe in out


def test_check_json_carries_the_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = history(tmp_path, revision('op.create_index("ix_users_role", "users", ["role"])'))

    assert main(["check", "--json", "--script-location", str(scripts)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], [(f["rule"], f["revision"]) for f in report["lint"]]) == (
        False,
        [("create-index-non-concurrently", "0101")],
    )


def test_check_passes_on_the_shipped_history(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lint"] == []


def test_check_passes_with_information_only(tmp_path: Path) -> None:
    settings = SchemaSettings.resolve(database_url="sqlite://")
    scripts = history(tmp_path, revision(BATCH_ALTER, downgrade=BATCH_ALTER))
    with Migrator(settings, script_location=scripts) as migrator:
        report = migrator.check()

    assert (report.ok, [(f.rule, f.severity) for f in report.lint]) == (
        True,
        [("sqlite-table-rebuild", "info")],
    )


# -- the rules are real: on PostgreSQL the safe ways run, and the outright failures fail --------


@pytest.mark.postgresql
@pytest.mark.parametrize(("rule", "unsafe", "statement", "safe"), CASES)
def test_the_safe_way_runs_on_postgresql(
    tmp_path: Path, pg_url: str, rule: str, unsafe: list[str], statement: str, safe: list[str]
) -> None:
    settings = SchemaSettings.resolve(database_url=pg_url)
    with Migrator(settings, script_location=history(tmp_path, *safe)) as migrator:
        state = migrator.upgrade()

    assert state.at_head


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ("concurrently-in-transaction", "cannot run inside a transaction block"),
        ("add-column-not-null-without-default", 'column "nickname" of relation "users"'),
    ],
)
def test_an_unsafe_revision_the_lint_predicts_to_fail_fails_on_postgresql_with_rows(
    tmp_path: Path, pg_url: str, rule: str, error: str
) -> None:
    (unsafe,) = next(case.values[1] for case in CASES if case.values[0] == rule)
    settings = SchemaSettings.resolve(database_url=pg_url)
    with Migrator(settings, script_location=history(tmp_path, unsafe)) as migrator:
        migrator.upgrade(HEAD)
        with migrator.engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO tenants (id, name, slug) VALUES (1, 't', 't')")
            connection.exec_driver_sql(
                "INSERT INTO users (tenant_id, email, password_hash) VALUES (1, 'a@b.c', 'x')"
            )
        with pytest.raises(MigrationError, match=error):
            migrator.upgrade()
