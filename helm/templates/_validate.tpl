{{/* Checks across values that values.schema.json cannot express.  Each failure names the
     values involved and what to do; included once, from the Deployment. */}}
{{- define "edgectl.validate" -}}
{{- $v := .Values }}
{{- range $where, $resources := dict "resources" $v.resources "modelRepository.engineBuild.resources" $v.modelRepository.engineBuild.resources "openai.resources" $v.openai.resources }}
{{- range $section := list "requests" "limits" }}
{{- range $key, $_ := index $resources $section }}
{{- if hasPrefix "nvidia.com/" $key }}
{{- fail (printf "%s.%s must not set %s: GPUs come from gpu.resource (%s) x gpu.tensorParallel x gpu.pipelineParallel with profile gpu" $where $section $key $v.gpu.resource) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $v.profile "gpu") $v.gpu.products $v.affinity.nodeAffinity }}
{{- fail "set either gpu.products or affinity.nodeAffinity, not both: gpu.products becomes the pod's node affinity" }}
{{- end }}
{{- include "edgectl.validateGpuSharing" . }}
{{- include "edgectl.validateEphemeral" . }}
{{- include "edgectl.validateRollout" . }}
{{- $ports := $v.service.ports }}
{{- if or (eq (int $ports.http) (int $ports.grpc)) (eq (int $ports.http) (int $ports.metrics)) (eq (int $ports.grpc) (int $ports.metrics)) }}
{{- fail (printf "service.ports http, grpc and metrics must differ, got %v, %v, %v" $ports.http $ports.grpc $ports.metrics) }}
{{- end }}
{{- if and $v.openai.enabled (has (int $v.openai.port) (list (int $ports.http) (int $ports.grpc) (int $ports.metrics))) }}
{{- fail (printf "openai.port (%v) must differ from service.ports http, grpc and metrics (Triton listens on them in the same pod)" $v.openai.port) }}
{{- end }}
{{- with $v.triton }}
{{- $exit := sub (sub (int .terminationGracePeriodSeconds) (int .preStopSleepSeconds)) 5 }}
{{- if lt $exit (int .longestRequestSeconds) }}
{{- fail (printf "triton.terminationGracePeriodSeconds (%v) must cover preStopSleepSeconds (%v) + longestRequestSeconds (%v) + 5: Triton would get only %v s after SIGTERM to finish a %v s request" .terminationGracePeriodSeconds .preStopSleepSeconds .longestRequestSeconds $exit .longestRequestSeconds) }}
{{- end }}
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
{{- if not .keda.enabled }}
{{- $served := list }}
{{- range .prometheusAdapterRules }}
{{- $served = append $served .name.as }}
{{- end }}
{{- range $metric := list .waitingRequests.metricName .kvCacheUsage.metricName }}
{{- if not (has $metric $served) }}
{{- fail (printf "autoscaling: no rule in autoscaling.prometheusAdapterRules serves %s (name.as), but the HPA asks prometheus-adapter for it" $metric) }}
{{- end }}
{{- end }}
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

{{/* GPU sharing: the resource must be what the sharing mode hands out, and a shared GPU is one
     device (a time-sliced replica or a MIG slice cannot be a tensor/pipeline-parallel rank). */}}
{{- define "edgectl.validateGpuSharing" -}}
{{- $gpu := .Values.gpu }}
{{- if eq .Values.profile "gpu" }}
{{- $resource := $gpu.resource }}
{{- if and (eq $gpu.sharing "exclusive") (ne $resource "nvidia.com/gpu") }}
{{- fail (printf "gpu.resource %s needs gpu.sharing timeSlicing (nvidia.com/gpu.shared) or mig (nvidia.com/mig-*); exclusive GPUs are nvidia.com/gpu" $resource) }}
{{- end }}
{{- if and (eq $gpu.sharing "timeSlicing") (not (has $resource (list "nvidia.com/gpu" "nvidia.com/gpu.shared"))) }}
{{- fail (printf "gpu.sharing timeSlicing hands out nvidia.com/gpu (renameByDefault false) or nvidia.com/gpu.shared (renameByDefault true), not %s" $resource) }}
{{- end }}
{{- if and (eq $gpu.sharing "mig") (not (regexMatch "^nvidia\\.com/mig-[1-7]g\\.[0-9]+gb$" $resource)) }}
{{- fail (printf "gpu.sharing mig needs gpu.resource nvidia.com/mig-<g>g.<memory>gb (the device plugin's mixed strategy), not %s" $resource) }}
{{- end }}
{{- if and (ne $gpu.sharing "exclusive") (gt (int (include "edgectl.gpuCount" .)) 1) }}
{{- fail (printf "gpu.sharing %s gives a pod one shared device: gpu.tensorParallel x gpu.pipelineParallel must be 1, got %s" $gpu.sharing (include "edgectl.gpuCount" .)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Disk-backed emptyDirs count against the pod's ephemeral-storage limit (the sum of its
     containers' limits): their sizeLimits plus container logs must fit, or the kubelet evicts
     the pod once they fill.  Checked for the server pod and the build Job's pod. */}}
{{- define "edgectl.validateEphemeral" -}}
{{- $v := .Values }}
{{- $logs := 67108864.0 }}
{{- $dirs := dict "triton.tmpSize" $v.triton.tmpSize "/models" (include "edgectl.modelRootSize" .) }}
{{- if eq $v.modelRepository.source "objectStorage" }}
{{- $_ := set $dirs "modelRepository.objectStorage.sizeLimit" $v.modelRepository.objectStorage.sizeLimit }}
{{- end }}
{{- range $v.extraVolumes }}
{{- if and .emptyDir (ne (toString .emptyDir.medium) "Memory") .emptyDir.sizeLimit }}
{{- $_ := set $dirs (printf "extraVolumes %s" .name) .emptyDir.sizeLimit }}
{{- end }}
{{- end }}
{{- $containers := dict "resources" $v.resources }}
{{- if $v.openai.enabled }}
{{- $_ := set $containers "openai.resources" $v.openai.resources }}
{{- end }}
{{- include "edgectl.checkEphemeral" (dict "pod" "the server pod" "dirs" $dirs "containers" $containers "logs" $logs) }}
{{- if eq $v.modelRepository.source "engineBuild" }}
{{- include "edgectl.checkEphemeral" (dict "pod" "the engine-build pod" "dirs" (dict "triton.tmpSize" $v.triton.tmpSize) "containers" (dict "modelRepository.engineBuild.resources" $v.modelRepository.engineBuild.resources) "logs" $logs) }}
{{- end }}
{{- end }}

{{- define "edgectl.checkEphemeral" -}}
{{- $limit := 0.0 }}
{{- $limited := false }}
{{- range $where, $resources := .containers }}
{{- with (default dict $resources.limits) }}
{{- if hasKey . "ephemeral-storage" }}
{{- $limit = addf $limit (include "edgectl.bytes" (index . "ephemeral-storage") | float64) }}
{{- $limited = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if $limited }}
{{- $need := mulf .logs (len .containers) }}
{{- $parts := list }}
{{- range $where, $size := .dirs }}
{{- $need = addf $need (include "edgectl.bytes" $size | float64) }}
{{- $parts = append $parts (printf "%s %v" $where $size) }}
{{- end }}
{{- if gt $need $limit }}
{{- fail (printf "%s would be evicted: its disk-backed emptyDirs (%s) plus 64Mi of logs per container need %.0f bytes, but its containers' ephemeral-storage limits (%s) sum to %.0f; raise those limits or shrink the emptyDirs" .pod (join ", " $parts) $need (join ", " (keys .containers | sortAlpha)) $limit) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A ReadWriteOnce claim is attached to one node: a second pod elsewhere (a surge, a replica)
     cannot mount it, so the rollout must not surge onto it. */}}
{{- define "edgectl.validateRollout" -}}
{{- $v := .Values }}
{{- if and (include "edgectl.singleNodeClaim" .) (eq (toString $v.strategy.type) "RollingUpdate") }}
{{- $surge := toString (dig "rollingUpdate" "maxSurge" "25%" $v.strategy) }}
{{- if not (has $surge (list "0" "0%")) }}
{{- fail (printf "strategy RollingUpdate with maxSurge %s starts a second pod while the first holds the ReadWriteOnce claim (modelRepository.pvc.accessModes %v); on another node it cannot attach it: use strategy {} (Recreate), maxSurge 0, or a ReadWriteMany claim" $surge $v.modelRepository.pvc.accessModes) }}
{{- end }}
{{- end }}
{{- end }}
