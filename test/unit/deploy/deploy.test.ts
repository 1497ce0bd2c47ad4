/**
 * Keeps the deployment files (deploy/, docs/deployment.md) consistent with the code: the manifests parse, the
 * config they ship passes both config readers, every container command line names a real subcommand and real
 * options, and everything the production commands import is inside the image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, normalize } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfigText } from '../../../gateway/config/load.ts';
import { parseSyncConfig } from '../../../migration-scripts/config.ts';
import { gatewayCommand } from '../../../gateway/command.ts';
import { flagsCommand } from '../../../flags/command.ts';
import { syncCommand } from '../../../migration-scripts/command.ts';

const K8S = 'deploy/k8s';
const CONFIG_PATH = '/etc/strangler/strangler.yaml';
const FAKE_ENV = {
  STRANGLER_SESSION_SECRET: 's'.repeat(32), STRANGLER_ADMIN_TOKEN: 'a'.repeat(32), UNLEASH_BACKEND_TOKEN: 'default:production.x', UNLEASH_ADMIN_TOKEN: 'user:x',
  LEGACY_DATABASE_URL: 'postgres://u:p@legacy/db', SERVICE_DATABASE_URL: 'postgres://u:p@service/db', CONTROLLER_DATABASE_URL: 'postgres://u:p@c/db',
};

interface Manifest { file: string; kind: string; name: string; body: Record<string, unknown> }
interface Probe { httpGet: { path: string; port: string } }
interface Container {
  name: string;
  args?: string[];
  command?: string[];
  ports?: { name: string; containerPort: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
}
interface VolumeMount { name: string; mountPath: string; readOnly?: boolean }
interface PodSpec {
  containers: (Container & { volumeMounts?: VolumeMount[]; securityContext?: { readOnlyRootFilesystem?: boolean }; lifecycle?: { preStop?: { exec?: { command?: string[] } } } })[];
  volumes?: { name: string; emptyDir?: object; configMap?: { name: string } }[];
  restartPolicy?: string;
  terminationGracePeriodSeconds?: number;
}
interface PodFailurePolicy { rules: { action: string; onExitCodes?: { operator: string; values: number[] } }[] }
interface JobSpec { backoffLimit?: number; podFailurePolicy?: PodFailurePolicy; podReplacementPolicy?: string; template?: { spec?: PodSpec } }
interface WorkloadSpec { template?: { spec?: PodSpec }; jobTemplate?: { spec?: JobSpec } }

function manifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const dir of ['.', 'base', 'jobs', 'optional']) {
    for (const f of readdirSync(join(K8S, dir)).filter((n) => n.endsWith('.yaml')).sort()) {
      const file = join(K8S, dir, f);
      for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
        assert.deepEqual(doc.errors.map((e) => e.message), [], `${file} parses`);
        const body = doc.toJS() as { kind: string; metadata: { name: string } };
        out.push({ file, kind: body.kind, name: body.metadata.name, body: body as unknown as Record<string, unknown> });
      }
    }
  }
  return out;
}

function podSpec(m: Manifest): PodSpec | undefined {
  const spec = m.body.spec as WorkloadSpec | undefined;
  return m.kind === 'CronJob' ? spec?.jobTemplate?.spec?.template?.spec : spec?.template?.spec;
}

function shippedConfig(): string {
  const cm = manifests().find((m) => m.kind === 'ConfigMap' && m.name === 'strangler-config');
  assert.ok(cm, 'a ConfigMap strangler-config');
  const text = (cm.body.data as Record<string, string>)['strangler.yaml'];
  assert.ok(text, 'it holds strangler.yaml');
  return text;
}

test('every manifest parses and has apiVersion, kind, name and the strangler namespace', () => {
  const all = manifests();
  assert.ok(all.length >= 15, `found ${all.length} manifests`);
  for (const m of all) {
    assert.ok(typeof m.body.apiVersion === 'string' && m.kind && m.name, `${m.file}: apiVersion/kind/name`);
    if (m.kind !== 'Namespace') assert.equal((m.body.metadata as { namespace?: string }).namespace, 'strangler', `${m.file} ${m.kind}/${m.name}`);
  }
});

test('the shipped config passes the gateway reader and the sync reader, and docs/deployment.md shows the same text', () => {
  const text = shippedConfig();
  const config = parseConfigText(text, 'strangler.yaml', FAKE_ENV);
  assert.equal(config.admin.bind, '0.0.0.0');
  assert.ok(config.admin.token, 'a non-loopback control plane needs admin.token');
  assert.ok(config.identity.sessionSecret, 'several gateway pods need one session secret');
  assert.ok(config.controller.databaseUrl, 'two controllers need the PostgreSQL state store');
  const sync = parseSyncConfig(parse(text), 'strangler.yaml', FAKE_ENV);
  assert.ok(sync.kafka && sync.kafka.brokers.length > 0);
  const doc = readFileSync('docs/deployment.md', 'utf8');
  const block = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.equal(block?.trim(), text.trim(), 'the first yaml block of docs/deployment.md is the ConfigMap text');
});

test('the example Secret names every variable the config needs without a default', () => {
  const text = shippedConfig();
  const required = new Set([...JSON.stringify(parse(text)).matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]));
  const secret = manifests().find((m) => m.kind === 'Secret');
  const keys = Object.keys((secret?.body.stringData ?? {}) as Record<string, string>);
  assert.deepEqual([...required].filter((k) => k && !keys.includes(k)), []);
  assert.ok(required.size >= 5);
});

test('flags.gateways lists one control plane per gateway pod (StatefulSet replicas, headless Service)', () => {
  const config = parseConfigText(shippedConfig(), 'strangler.yaml', FAKE_ENV);
  const all = manifests();
  const sts = all.find((m) => m.kind === 'StatefulSet' && m.name === 'strangler-gateway');
  const spec = sts?.body.spec as { replicas: number; serviceName: string };
  assert.ok(all.some((m) => m.kind === 'Service' && m.name === spec.serviceName && (m.body.spec as { clusterIP?: string }).clusterIP === 'None'));
  const expected = Array.from({ length: spec.replicas }, (_, i) => `http://strangler-gateway-${i}.${spec.serviceName}.strangler.svc.cluster.local:${config.admin.port}`);
  assert.deepEqual(config.flags.gateways.map((g) => g.url), expected);
});

test('every container runs a real subcommand with options its --help documents', () => {
  const helps: Record<string, string> = { gateway: gatewayCommand.help, flags: flagsCommand.help, sync: syncCommand.help };
  let checked = 0;
  for (const m of manifests()) {
    for (const c of podSpec(m)?.containers ?? []) {
      const args = c.args ?? [];
      assert.equal(c.command, undefined, `${m.name}: the image's ENTRYPOINT is the command`);
      const [command, sub] = args;
      const help = helps[command ?? ''];
      assert.ok(help, `${m.name}: "${command}" is gateway, flags or sync`);
      if (command !== 'gateway') assert.match(help, new RegExp(`^\\s+${sub}\\b`, 'm'), `${m.name}: subcommand "${sub}" in \`strangler ${command} --help\``);
      for (const option of args.filter((a) => a.startsWith('--'))) assert.ok(help.includes(option), `${m.name}: ${option} in \`strangler ${command} --help\``);
      assert.equal(args[args.indexOf('--config') + 1], CONFIG_PATH, `${m.name}: --config ${CONFIG_PATH}`);
      checked++;
    }
  }
  assert.ok(checked >= 10, `checked ${checked} containers`);
});

test('gateway probes use the admin port and paths the control plane serves without a token', () => {
  const config = parseConfigText(shippedConfig(), 'strangler.yaml', FAKE_ENV);
  const sts = manifests().find((m) => m.kind === 'StatefulSet');
  assert.ok(sts, 'the gateway StatefulSet');
  const container = podSpec(sts)?.containers[0];
  assert.ok(container, 'a gateway container');
  const ports = Object.fromEntries((container.ports ?? []).map((p) => [p.name, p.containerPort]));
  assert.deepEqual(ports, { http: config.proxy.port, admin: config.admin.port });
  assert.equal(container.startupProbe?.httpGet.path, '/healthz');
  assert.equal(container.livenessProbe?.httpGet.path, '/healthz');
  assert.equal(container.readinessProbe?.httpGet.path, '/readyz');
  for (const probe of [container.startupProbe, container.livenessProbe, container.readinessProbe]) assert.equal(probe?.httpGet.port, 'admin');
  const app = readFileSync('gateway/admin/app.ts', 'utf8');
  for (const path of ['/healthz', '/readyz']) assert.ok(app.includes(`app.get('${path}'`), `the control plane serves ${path}`);
});

/** Relative .ts imports (static and dynamic) reachable from `roots`, and the packages they import. */
function importGraph(roots: string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [...roots];
  const specifier = /(?:^|[\s;])(?:import|export)\s+(type\s+)?(?:[\s\S]*?\sfrom\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8').replace(/^\s*(\/\/|\*|\/\*).*$/gm, '');
    for (const m of text.matchAll(specifier)) {
      if (m[1]) continue; // import type: erased at run time
      const spec = m[2] ?? m[3] ?? '';
      if (spec.startsWith('.')) {
        const target = normalize(join(dirname(file), spec));
        if (existsSync(target)) queue.push(target);
      } else if (!spec.startsWith('node:') && !builtinModules.includes(spec)) {
        packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0] as string);
      }
    }
  }
  return { files, packages };
}

test('the image holds everything the production commands import, and only production dependencies', () => {
  const dockerfile = readFileSync('deploy/Dockerfile', 'utf8');
  const copied = [...dockerfile.matchAll(/^COPY ([\w-]+)\/ \1\/$/gm)].map((m) => m[1] as string);
  assert.ok(copied.includes('gateway') && copied.includes('bin'), `COPY lines found: ${copied.join(', ')}`);
  // cli/main.ts loads each command lazily; the image serves gateway, flags and sync (start/devstack are dev only).
  const { files, packages } = importGraph(['gateway/command.ts', 'flags/command.ts', 'migration-scripts/command.ts']);
  const outside = [...files].filter((f) => !copied.includes(f.split('/')[0] as string));
  assert.deepEqual(outside, [], 'files imported by production commands but not copied into the image');
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
  assert.deepEqual([...packages].filter((p) => !(p in pkg.dependencies)).sort(), [], 'packages imported at run time must be dependencies, not devDependencies');
  assert.ok(files.size > 30, `followed ${files.size} files`);
  const ignore = readFileSync('.dockerignore', 'utf8').split('\n').map((l) => l.trim());
  for (const dir of copied) assert.ok(ignore.includes(`!${dir}`), `.dockerignore lets ${dir} into the build context`);
});

function jobSpec(m: Manifest): JobSpec | undefined {
  if (m.kind === 'Job') return m.body.spec as JobSpec;
  if (m.kind === 'CronJob') return (m.body.spec as WorkloadSpec).jobTemplate?.spec;
  return undefined;
}

test('a Job whose command has a result exit code (3) fails at once on it, and retries other failures', () => {
  // The codes come from the commands: sync verify exits 3 on differences, sync repair when it skipped keys, flags
  // sync on drift. A result is not an error: retrying cannot change it, and an error (exit 1: a database or Unleash
  // restarting) must not look like a result, or a scheduled verify reports drift whenever PostgreSQL blips.
  assert.match(syncCommand.help, /exit 0 identical, 3 different/);
  assert.match(syncCommand.help, /exit 3 when keys\s+were skipped/);
  assert.match(flagsCommand.help, /3 drift found/);
  const resultCommands = ['sync verify', 'sync repair', 'flags sync'];
  let checked = 0;
  for (const m of manifests()) {
    const spec = jobSpec(m);
    if (!spec) continue;
    const pod = podSpec(m);
    const args = pod?.containers[0]?.args ?? [];
    if (!resultCommands.includes(args.slice(0, 2).join(' '))) continue;
    checked++;
    assert.equal(pod?.restartPolicy, 'Never', `${m.name}: podFailurePolicy needs restartPolicy Never`);
    const failOn3 = spec.podFailurePolicy?.rules.some((r) => r.action === 'FailJob' && r.onExitCodes?.operator === 'In' && r.onExitCodes.values.includes(3));
    assert.ok(failOn3, `${m.name}: a podFailurePolicy rule FailJob on exit code 3 (the command's result)`);
    assert.ok((spec.backoffLimit ?? 6) >= 1, `${m.name}: backoffLimit >= 1, so exit 1 (a transient error) is retried`);
  }
  assert.ok(checked >= 3, `checked ${checked} Jobs (flags sync, verify, scheduled verify)`);
});

test('a backfill Job starts a replacement pod only after the old one terminated, so two never copy one table at once', () => {
  // backfill stops on SIGTERM (PID 1 in a pod), but its chunks in flight commit first: by default the Job would start
  // the replacement as soon as the old pod is terminating, and both would copy the same table.
  let checked = 0;
  for (const m of manifests()) {
    const spec = jobSpec(m);
    if (!spec || (podSpec(m)?.containers[0]?.args ?? []).slice(0, 2).join(' ') !== 'sync backfill') continue;
    checked++;
    assert.equal(spec.podReplacementPolicy, 'Failed', `${m.name}: podReplacementPolicy: Failed`);
    assert.ok(spec.podFailurePolicy?.rules.some((r) => r.action === 'Ignore'), `${m.name}: an eviction (DisruptionTarget) is not counted against backoffLimit`);
  }
  assert.ok(checked >= 1, 'checked the backfill Job');
});

test('every path a pod writes is on a writable volume (read-only root filesystem)', () => {
  const config = parseConfigText(shippedConfig(), 'strangler.yaml', FAKE_ENV);
  const under = (path: string, mount: string) => path === mount || path.startsWith(`${mount.replace(/\/$/, '')}/`);
  let checked = 0;
  for (const m of manifests()) {
    const pod = podSpec(m);
    for (const c of pod?.containers ?? []) {
      if (c.securityContext?.readOnlyRootFilesystem !== true) continue;
      checked++;
      const emptyDirs = new Set((pod?.volumes ?? []).filter((v) => v.emptyDir).map((v) => v.name));
      const writable = (c.volumeMounts ?? []).filter((v) => !v.readOnly && emptyDirs.has(v.name)).map((v) => v.mountPath);
      const needs = (path: string, why: string) => assert.ok(writable.some((mount) => under(path, mount)), `${m.name}: ${path} (${why}) is not on a writable emptyDir; writable: ${writable.join(', ') || 'none'}`);
      needs('/tmp', "$TMPDIR: tsx's transform cache, tsx does not start without it");
      const config_ = (c.volumeMounts ?? []).find((v) => under(CONFIG_PATH, v.mountPath));
      assert.ok(config_?.readOnly, `${m.name}: the config is mounted (read-only) at ${CONFIG_PATH}`);
      const [command, sub] = c.args ?? [];
      if (command === 'gateway' && config.flags.backupPath) needs(config.flags.backupPath, 'flags.backupPath: last good flags and rollback overrides');
      if (command === 'flags' && sub === 'controller' && !config.controller.databaseUrl && config.controller.stateFile) needs(config.controller.stateFile, 'controller.stateFile');
    }
  }
  assert.ok(checked >= 10, `checked ${checked} containers`);
  // Outside Kubernetes (docker run without volumes) the same folder exists in the image, owned by the runtime user.
  const dockerfile = readFileSync('deploy/Dockerfile', 'utf8');
  assert.ok(config.flags.backupPath && dockerfile.includes(`mkdir -p ${config.flags.backupPath}`), 'the Dockerfile creates flags.backupPath');
});

test("the gateway's grace period covers preStop, the drain and the workers' drain margin", () => {
  const config = parseConfigText(shippedConfig(), 'strangler.yaml', FAKE_ENV);
  const sts = manifests().find((m) => m.kind === 'StatefulSet' && m.name === 'strangler-gateway');
  assert.ok(sts);
  const pod = podSpec(sts);
  const c = pod?.containers[0];
  const preStop = c?.lifecycle?.preStop?.exec?.command ?? [];
  assert.equal(preStop[0], 'sleep', 'preStop sleeps while endpoints and load balancers stop sending');
  const sleepS = Number(preStop[1]);
  const workers = Number((c?.args ?? [])[(c?.args ?? []).indexOf('--workers') + 1] ?? config.proxy.workers);
  // SIGTERM drains in-flight requests and WebSockets for at most drainTimeoutMs; with --workers the primary waits up
  // to drainTimeoutMs + 5 s for each worker's drain (gateway/cluster.ts), then closes the control plane.
  const drainS = config.proxy.drainTimeoutMs / 1000 + (workers > 1 ? 5 : 0);
  assert.ok((pod?.terminationGracePeriodSeconds ?? 30) >= sleepS + drainS + 5, `terminationGracePeriodSeconds ${pod?.terminationGracePeriodSeconds} >= preStop ${sleepS} s + drain ${drainS} s + 5 s`);
});

test('forwarded headers are trusted only behind an ingress: the data plane has no LoadBalancer or NodePort Service', () => {
  const config = parseConfigText(shippedConfig(), 'strangler.yaml', FAKE_ENV);
  assert.equal(config.proxy.trustForwardedHeaders, true, 'the test is about the shipped setting');
  for (const m of manifests().filter((x) => x.kind === 'Service')) {
    const spec = m.body.spec as { type?: string; ports: { targetPort: string | number }[] };
    if (!spec.ports.some((p) => p.targetPort === 'http' || p.targetPort === config.proxy.port)) continue;
    assert.ok((spec.type ?? 'ClusterIP') === 'ClusterIP', `${m.name}: a ${spec.type} Service passes clients' X-Forwarded-* straight to a gateway that trusts them`);
  }
  const doc = readFileSync('docs/deployment.md', 'utf8');
  assert.doesNotMatch(doc, /ingress or a `LoadBalancer` Service in front of/, 'docs/deployment.md must not offer a LoadBalancer Service while the config trusts forwarded headers');
  assert.match(doc, /`LoadBalancer` or `NodePort` Service[^.]*set it to\s+`false`/);
});

test('docs/deployment.md says what the gateway serves at GET /admin/sync with the shipped config', () => {
  // gateway/command.ts wires syncFromConfig for single-process and --workers gateways alike: with a sync section
  // every gateway pod answers /admin/sync and opens pools to both databases on the first request.
  assert.ok(parseSyncConfig(parse(shippedConfig()), 'strangler.yaml', FAKE_ENV), 'the shipped config has a sync section');
  for (const file of ['gateway/command.ts', 'gateway/cluster.ts']) assert.match(readFileSync(file, 'utf8'), /syncFromConfig\(config\)/, `${file} serves GET /admin/sync`);
  const doc = readFileSync('docs/deployment.md', 'utf8');
  assert.doesNotMatch(doc, /does not serve these figures/, 'docs/deployment.md must not say the gateway does not serve /admin/sync');
  assert.match(doc, /gateway serves the same figures at `GET \/admin\/sync`/);
});
