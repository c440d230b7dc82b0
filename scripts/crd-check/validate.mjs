// Validates custom resources rendered by the chart against the CRD schemas of KEDA and the
// Prometheus Operator, as packaged by kubernetes-models: types, required fields and enums.
// (Unknown fields are not refused: the schemas, like the API server, allow and prune them.)
//
//   node validate.mjs FILE.json   (a JSON array of manifests)
//
// Exits 1 with one line per error; prints one line per valid resource.
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

let failed = 0;
for (const doc of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const Model = models[key];
  if (!Model) {
    console.log(`${key} ${doc.metadata?.name}: no schema here`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${key} ${doc.metadata.name}: valid`);
  } catch (e) {
    console.log(`${key} ${doc.metadata?.name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
