// The hub's Prometheus metrics, on a registry of its own (never the global one).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class HubMetrics {
  readonly registry = new Registry();
  readonly issued = new Counter({ name: 'sepal_hub_certificates_issued_total', help: 'Certificates issued, by kind (enroll, renew)', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly issuanceSeconds = new Histogram({
    name: 'sepal_hub_issuance_duration_seconds', help: 'CSR verify + sign + store, seconds',
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers: [this.registry],
  });
  readonly denials = new Counter({ name: 'sepal_hub_denials_total', help: 'Requests refused, by reason code', labelNames: ['reason'] as const, registers: [this.registry] });
  readonly nodes = new Gauge({ name: 'sepal_hub_nodes', help: 'Nodes by state', labelNames: ['state'] as const, registers: [this.registry] });
  readonly openStreams = new Gauge({ name: 'sepal_hub_manifest_streams_open', help: 'Open WatchManifest streams', registers: [this.registry] });
  readonly manifestsPublished = new Counter({ name: 'sepal_hub_manifests_published_total', help: 'Manifests signed and published', registers: [this.registry] });
  readonly revocations = new Counter({ name: 'sepal_hub_revocations_total', help: 'Nodes revoked (seen by this hub process)', registers: [this.registry] });
  readonly superlinkRegistrations = new Counter({
    name: 'sepal_hub_superlink_registrations_total', help: 'Flower key registrations with the SuperLink by this process, by result (registered, recovered, retry, failed)',
    labelNames: ['result'] as const, registers: [this.registry],
  });
  readonly superlinkUnregistrations = new Counter({
    name: 'sepal_hub_superlink_unregistrations_total', help: 'Flower node unregistrations by this process, by result (unregistered, already_gone, not_registered, retry)',
    labelNames: ['result'] as const, registers: [this.registry],
  });
  readonly flowerRegistrations = new Gauge({ name: 'sepal_hub_flower_registrations', help: 'Nodes by Flower registration state (pending, registered, unregister-pending, unregistered, failed)', labelNames: ['state'] as const, registers: [this.registry] });
  readonly crlNextUpdate = new Gauge({ name: 'sepal_hub_crl_next_update_timestamp_seconds', help: 'nextUpdate of the CRL being served', registers: [this.registry] });
  readonly caNotAfter = new Gauge({
    name: 'sepal_hub_ca_not_after_timestamp_seconds', help: 'notAfter of the hub\'s CA and server certificates, by role (root, issuing, server) and state (active, prepared, retired, trusted)',
    labelNames: ['role', 'state', 'key_id'] as const, registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: 'sepal_hub_' });
      // prom-client names these gauges `_total`, which only counters may end in (promtool check
      // metrics refuses the scrape); the same counts stay available, by type, without the suffix.
      for (const n of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(`sepal_hub_${n}`);
      }
    }
  }
}
