// The policies in force, one per tenant, replaced atomically: a new document is parsed,
// validated, compiled and its built-in tests run against the compiled candidate; only when
// all of that holds does it replace the old one (a single Map write on the event loop, so a
// packet sees either the old or the new policy, never a mix). A refused document changes
// nothing and the error lists every reason with its path.
//
// `generation` moves with every change, so the engine re-evaluates existing connections.
import { TgError } from '../util/errors.js';
import { logger } from '../util/log.js';
import { CompiledPolicy, RuleNames } from './compile.js';
import type { PolicySource } from './decide.js';
import type { WorkloadDirectory } from './directory.js';
import type { PolicyDocument, PolicyIssue } from './model.js';
import { runPolicyTests } from './selftest.js';
import { validateDocument } from './validate.js';

const log = logger('policy');

/** A refused document: `issues` are the reasons (errors), `warnings` what else was found. */
export class PolicyRejectedError extends TgError {
  readonly issues: readonly PolicyIssue[];
  readonly warnings: readonly PolicyIssue[];

  constructor(tenant: string | null, issues: PolicyIssue[], warnings: PolicyIssue[]) {
    const head = tenant === null ? 'policy document refused' : `policy for tenant '${tenant}' refused`;
    const lines = issues.map((i) => `  ${i.path}: ${i.message}`);
    super(
      'TG_ERR_POLICY_REJECTED',
      `${head} (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`,
    );
    this.issues = issues;
    this.warnings = warnings;
  }
}

export interface PolicyReport {
  tenant: string | null;
  ok: boolean;
  errors: PolicyIssue[];
  warnings: PolicyIssue[];
}

export interface PolicyAccepted {
  tenant: string;
  generation: number;
  rules: number;
  tests: number;
  warnings: PolicyIssue[];
}

interface Entry {
  doc: PolicyDocument;
  compiled: CompiledPolicy;
}

export interface PolicyStoreOptions {
  /** Refuse documents with warnings too (conflicts, unmatched selectors, unknown tenants). */
  strict?: boolean;
}

export class PolicyStore implements PolicySource {
  readonly names = new RuleNames();
  /** Moves with every accepted document and every removal. */
  generation = 1;
  private readonly policies = new Map<string, Entry>();
  private readonly defaultDenies = new Map<string, number>();
  private readonly strict: boolean;

  constructor(
    readonly directory: WorkloadDirectory | null = null,
    opts: PolicyStoreOptions = {},
  ) {
    this.strict = opts.strict ?? false;
  }

  policyOf(tenant: string): CompiledPolicy | undefined {
    return this.policies.get(tenant)?.compiled;
  }

  defaultDenyOf(tenant: string): number {
    let h = this.defaultDenies.get(tenant);
    if (h === undefined) {
      h = this.names.intern(tenant, 'default-deny');
      this.defaultDenies.set(tenant, h);
    }
    return h;
  }

  document(tenant: string): PolicyDocument | undefined {
    return this.policies.get(tenant)?.doc;
  }

  tenants(): string[] {
    return [...this.policies.keys()];
  }

  /** Everything replace() would check, without changing anything. */
  check(input: unknown, expectTenant?: string): PolicyReport {
    const r = this.prepare(input, expectTenant);
    return { tenant: r.tenant, ok: r.errors.length === 0, errors: r.errors, warnings: r.warnings };
  }

  /**
   * Validates, compiles and tests `input` (JSON text or a parsed value); when everything
   * holds it replaces the tenant's policy. Throws PolicyRejectedError otherwise (the old
   * policy stays in force). `expectTenant`: the document must be for this tenant.
   */
  replace(input: unknown, expectTenant?: string): PolicyAccepted {
    const r = this.prepare(input, expectTenant);
    if (r.errors.length > 0 || r.compiled === null || r.doc === null) {
      log.info({ tenant: r.tenant, errors: r.errors.length }, 'policy refused');
      throw new PolicyRejectedError(r.tenant, r.errors, r.warnings);
    }
    this.policies.set(r.doc.tenant, { doc: r.doc, compiled: r.compiled });
    this.generation++;
    log.info(
      {
        tenant: r.doc.tenant,
        rules: r.doc.rules.length,
        generation: this.generation,
        warnings: r.warnings.length,
      },
      'policy accepted',
    );
    return {
      tenant: r.doc.tenant,
      generation: this.generation,
      rules: r.doc.rules.length,
      tests: r.doc.tests.length,
      warnings: r.warnings,
    };
  }

  /** Drops a tenant's policy: its workloads are default deny again. */
  remove(tenant: string): boolean {
    const had = this.policies.delete(tenant);
    if (had) this.generation++;
    return had;
  }

  private prepare(
    input: unknown,
    expectTenant: string | undefined,
  ): {
    tenant: string | null;
    doc: PolicyDocument | null;
    compiled: CompiledPolicy | null;
    errors: PolicyIssue[];
    warnings: PolicyIssue[];
  } {
    const v = validateDocument(input, this.directory);
    const tenant = v.doc?.tenant ?? null;
    const errors = [...v.errors];
    if (v.doc !== null && expectTenant !== undefined && v.doc.tenant !== expectTenant)
      errors.push({
        code: 'schema',
        path: 'tenant',
        message: `the document is for tenant '${v.doc.tenant}', not '${expectTenant}'`,
      });
    if (this.strict) errors.push(...v.warnings);
    if (v.doc === null || errors.length > 0)
      return { tenant, doc: v.doc, compiled: null, errors, warnings: v.warnings };
    const compiled = new CompiledPolicy(v.doc.tenant, v.rules, this.names);
    errors.push(...runPolicyTests(v.doc, compiled, this.directory, this.names));
    return { tenant, doc: v.doc, compiled, errors, warnings: v.warnings };
  }
}
