import { closestName, errorMessage } from '@moat/protocol/support';
import { parse } from 'acorn';
import { BuildGuardError } from './errors.js';

/** Module ids whose `feature` export is a build-time flag. */
export const FEATURE_MODULES = ['@moat/build-guard/feature', 'bun:bundle'] as const;

interface Node {
  type: string;
  start: number;
  end: number;
  loc?: { start: { line: number; column: number } };
  [key: string]: unknown;
}

/** Result of {@link replaceFeatureCalls}. */
export interface FeatureReplacement {
  readonly code: string;
  /** Flags replaced, in source order. */
  readonly replaced: ReadonlyArray<{ readonly name: string; readonly value: boolean; readonly line: number }>;
}

/** The registered name closest to `name`, if it is close enough to be a typo. */
export function closestFlag(name: string, known: readonly string[]): string | undefined {
  return closestName(name, known);
}

function walk(node: unknown, visit: (node: Node, parent: Node | undefined) => void, parent?: Node): void {
  if (typeof node !== 'object' || node === null) return;
  if (Array.isArray(node)) {
    for (const child of node) walk(child, visit, parent);
    return;
  }
  const n = node as Node;
  if (typeof n.type !== 'string') return;
  visit(n, parent);
  for (const [key, value] of Object.entries(n)) {
    if (key === 'loc' || key === 'start' || key === 'end') continue;
    if (typeof value === 'object' && value !== null) walk(value, visit, n);
  }
}

/**
 * Replaces every `feature("NAME")` call in JavaScript module `code` — where `feature` is
 * imported from `@moat/build-guard/feature` or `bun:bundle` — with `true` or `false`.
 *
 * @throws {BuildGuardError} `ERR_UNKNOWN_FLAG` for a name the registry lacks (with the
 *   closest registered name), `ERR_NON_LITERAL_FLAG` for an argument that is not one string
 *   literal or a use of `feature` other than a direct call, `ERR_PARSE` for unparsable code.
 */
export function replaceFeatureCalls(code: string, features: Readonly<Record<string, boolean>>, file = '<input>'): FeatureReplacement {
  let ast: unknown;
  try {
    ast = parse(code, { ecmaVersion: 'latest', sourceType: 'module', locations: true, allowHashBang: true });
  } catch (error) {
    throw new BuildGuardError('ERR_PARSE', `expected a JavaScript module in ${file}, got a syntax error: ${errorMessage(error)}`);
  }
  const locals = new Set<string>();
  const importRanges: Array<[number, number]> = [];
  const flagModule = (n: unknown) => (FEATURE_MODULES as readonly unknown[]).includes((n as { value?: unknown } | null)?.value);
  const where0 = (n: Node) => `${file}:${n.loc?.start.line ?? 0}:${(n.loc?.start.column ?? 0) + 1}`;
  // Only `import { feature }` and direct calls are seen (and replaced) here: any other way to the
  // flag module — a namespace, a re-export, require(), import() — would ship the guarded branch.
  const refuse = (n: Node, got: string) => {
    throw new BuildGuardError(
      'ERR_NON_LITERAL_FLAG',
      `expected the flag module only as import { feature } from "${FEATURE_MODULES[0]}" (or "${FEATURE_MODULES[1]}") at ${where0(n)}, got ${got}`,
    );
  };
  walk(ast, (node) => {
    if ((node.type === 'ExportNamedDeclaration' || node.type === 'ExportAllDeclaration') && flagModule(node.source))
      refuse(node, 'a re-export of it');
    if (node.type === 'ImportExpression' && flagModule(node.source)) refuse(node, 'import() of it');
    if (
      node.type === 'CallExpression' &&
      (node.callee as Node).type === 'Identifier' &&
      (node.callee as { name?: string }).name === 'require' &&
      flagModule((node.arguments as Node[])[0])
    )
      refuse(node, 'require() of it');
    if (node.type !== 'ImportDeclaration') return;
    if (!flagModule(node.source)) return;
    for (const spec of node.specifiers as Node[]) {
      const imported =
        spec.type === 'ImportSpecifier'
          ? ((spec.imported as { name?: string; value?: string }).name ?? (spec.imported as { value?: string }).value)
          : undefined;
      if (imported !== 'feature')
        refuse(
          spec,
          spec.type === 'ImportNamespaceSpecifier'
            ? 'a namespace import'
            : spec.type === 'ImportDefaultSpecifier'
              ? 'a default import'
              : `an import of ${imported}`,
        );
      locals.add((spec.local as { name: string }).name);
    }
    importRanges.push([node.start, node.end]);
  });
  if (locals.size === 0) return { code, replaced: [] };

  const edits: Array<{ start: number; end: number; text: string }> = [];
  const replaced: Array<{ name: string; value: boolean; line: number }> = [];
  const where = (n: Node) => `${file}:${n.loc?.start.line ?? 0}:${(n.loc?.start.column ?? 0) + 1}`;
  const known = Object.keys(features);
  const inImport = (n: Node) => importRanges.some(([s, e]) => n.start >= s && n.end <= e);

  walk(ast, (node, parent) => {
    if (node.type !== 'Identifier' || !locals.has(node.name as string) || inImport(node)) return;
    const isCallee = parent?.type === 'CallExpression' && parent.callee === node;
    if (!isCallee) {
      throw new BuildGuardError(
        'ERR_NON_LITERAL_FLAG',
        `expected feature to be called directly as feature("NAME") at ${where(node)}, got another use of it`,
      );
    }
    const call = parent as Node;
    const args = call.arguments as Node[];
    const arg = args[0];
    let name: string | undefined;
    if (args.length === 1 && arg?.type === 'Literal' && typeof arg.value === 'string') name = arg.value;
    else if (args.length === 1 && arg?.type === 'TemplateLiteral' && (arg.expressions as unknown[]).length === 0) {
      const quasi = (arg.quasis as Node[])[0];
      if (quasi !== undefined) name = (quasi.value as { cooked: string }).cooked;
    }
    if (name === undefined) {
      throw new BuildGuardError(
        'ERR_NON_LITERAL_FLAG',
        `expected one string literal in feature(...) at ${where(call)}, got ${code.slice(call.start, Math.min(call.end, call.start + 60))}`,
      );
    }
    const value = features[name];
    if (value === undefined) {
      const hint = closestFlag(name, known);
      throw new BuildGuardError(
        'ERR_UNKNOWN_FLAG',
        `expected a flag of the registry at ${where(call)}, got "${name}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}; registered: ${known.join(', ') || 'none'}`,
      );
    }
    edits.push({ start: call.start, end: call.end, text: String(value) });
    replaced.push({ name, value, line: call.loc?.start.line ?? 0 });
  });

  edits.sort((a, b) => b.start - a.start);
  let out = code;
  for (const e of edits) out = out.slice(0, e.start) + e.text + out.slice(e.end);
  replaced.sort((a, b) => a.line - b.line);
  return { code: out, replaced };
}
