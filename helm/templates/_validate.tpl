{{/* Checks across values that values.schema.json cannot express.  Each failure names the
     values involved and what to do; included once, from the Deployment. */}}
{{- define "edgectl.validate" -}}
{{- $v := .Values }}
{{- range $section := list "requests" "limits" }}
{{- if hasKey (index $v.resources $section) "nvidia.com/gpu" }}
{{- fail (printf "resources.%s must not set nvidia.com/gpu: it is gpu.tensorParallel x gpu.pipelineParallel with profile gpu" $section) }}
{{- end }}
{{- end }}
{{- if and (eq $v.profile "gpu") $v.gpu.products $v.affinity.nodeAffinity }}
{{- fail "set either gpu.products or affinity.nodeAffinity, not both: gpu.products becomes the pod's node affinity" }}
{{- end }}
{{- $ports := $v.service.ports }}
{{- if or (eq (int $ports.http) (int $ports.grpc)) (eq (int $ports.http) (int $ports.metrics)) (eq (int $ports.grpc) (int $ports.metrics)) }}
{{- fail (printf "service.ports http, grpc and metrics must differ, got %v, %v, %v" $ports.http $ports.grpc $ports.metrics) }}
{{- end }}
{{- if le (int $v.triton.terminationGracePeriodSeconds) 5 }}
{{- fail "triton.terminationGracePeriodSeconds must exceed 5 (Triton's exit timeout is 5 s shorter)" }}
{{- end }}
{{- with $v.podDisruptionBudget }}
{{- if and .enabled (hasKey . "minAvailable") (hasKey . "maxUnavailable") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- end }}
{{- with $v.autoscaling }}
{{- if .enabled }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .minReplicas .maxReplicas) }}
{{- end }}
{{- if ne .prometheusAdapterRule.name.as .metricName }}
{{- fail (printf "autoscaling.prometheusAdapterRule.name.as (%s) must equal autoscaling.metricName (%s): the HPA asks prometheus-adapter for that metric" .prometheusAdapterRule.name.as .metricName) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled $v.metrics.podMonitor.enabled }}
{{- fail "enable metrics.serviceMonitor or metrics.podMonitor, not both (every sample would be scraped twice)" }}
{{- end }}
{{- if and (eq $v.modelRepository.source "engineBuild") (has "ReadOnlyMany" $v.modelRepository.pvc.accessModes) (not $v.modelRepository.pvc.existingClaim) }}
{{- fail "modelRepository.source engineBuild writes into the claim: modelRepository.pvc.accessModes cannot be ReadOnlyMany" }}
{{- end }}
{{- if $v.timeslice.enabled }}
{{- include "edgectl.validateTimeslice" $v }}
{{- end }}
{{- end }}
