{{/* Names: at most 63 characters, as Kubernetes requires of labels and DNS names. */}}
{{- define "edgectl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgectl.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edgectl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "edgectl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
edgectl.io/profile: {{ .Values.profile }}
{{- end }}

{{/* Selector labels of the Triton server pods. */}}
{{- define "edgectl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgectl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "edgectl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgectl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins it.  Argument: an image map. */}}
{{- define "edgectl.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}
{{- end }}

{{- define "edgectl.gpuCount" -}}
{{- if eq .Values.profile "gpu" }}
{{- mul (int .Values.gpu.tensorParallel) (int .Values.gpu.pipelineParallel) }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}

{{/* The claim holding the model store (pvc and engineBuild sources). */}}
{{- define "edgectl.claimName" -}}
{{- default (printf "%s-models" (include "edgectl.fullname" .)) .Values.modelRepository.pvc.existingClaim }}
{{- end }}

{{/* The build Job's identity: it changes whenever anything the build depends on changes, so a
     new Job runs (Job pod templates are immutable) and publishes builds/<id>/ on the claim. */}}
{{- define "edgectl.buildId" -}}
{{- $build := .Values.modelRepository.engineBuild }}
{{- $inputs := dict "image" (include "edgectl.buildImage" .) "command" $build.command "workingDir" $build.workingDir "env" $build.env "gpus" (include "edgectl.gpuCount" .) "useGpus" $build.useGpus "config" .Values.edgectlConfig }}
{{- if ne .Values.gpu.resource "nvidia.com/gpu" }}
{{- $_ := set $inputs "gpuResource" .Values.gpu.resource }}
{{- end }}
{{- toJson $inputs | sha256sum | trunc 12 }}
{{- end }}

{{/* Name of the engine-build Job and its NetworkPolicy. */}}
{{- define "edgectl.buildName" -}}
{{- printf "%s-engine-build" (include "edgectl.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{- define "edgectl.buildImage" -}}
{{- $image := .Values.modelRepository.engineBuild.image }}
{{- if $image.repository }}
{{- include "edgectl.imageRef" $image }}
{{- else }}
{{- include "edgectl.imageRef" .Values.image }}
{{- end }}
{{- end }}

{{/* Resources of a GPU-using container: gpu.resource (a whole GPU, a time-sliced replica or a
     MIG slice), as many as tensorParallel x pipelineParallel.  Arguments: resources, gpus, name. */}}
{{- define "edgectl.withGpus" -}}
{{- $resources := deepCopy .resources }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $resources "requests" (merge (dict .name .gpus) (default dict $resources.requests)) }}
{{- $_ := set $resources "limits" (merge (dict .name .gpus) (default dict $resources.limits)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Bytes in a Kubernetes quantity ("2Gi", "500M", 1073741824), as a float64. */}}
{{- define "edgectl.bytes" -}}
{{- $text := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $units := dict "" 1.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- $unit := index $units (trimPrefix $number $text) }}
{{- if not $unit }}
{{- fail (printf "cannot size %q: use a plain number or a k/M/G/T/Ki/Mi/Gi/Ti quantity" $text) }}
{{- end }}
{{- printf "%.0f" (mulf (float64 $number) $unit) }}
{{- end }}

{{/* Where the store's repository/ and artifacts/ sit inside the claim or copy: engine builds
     publish versions and point current/ at the live one; other stores keep them at the top. */}}
{{- define "edgectl.storePrefix" -}}
{{- if eq .Values.modelRepository.source "engineBuild" }}current/{{ end }}
{{- end }}

{{/* "true" when only one node may mount the claim (ReadWriteOnce / ReadWriteOncePod). */}}
{{- define "edgectl.singleNodeClaim" -}}
{{- $modes := .Values.modelRepository.pvc.accessModes }}
{{- if and (ne .Values.modelRepository.source "objectStorage") (not (has "ReadWriteMany" $modes)) (not (has "ReadOnlyMany" $modes)) }}true{{ end }}
{{- end }}

{{/* The Deployment's strategy: the values', or the one the claim's access mode allows. */}}
{{- define "edgectl.strategy" -}}
{{- if .Values.strategy.type }}
{{- toYaml .Values.strategy }}
{{- else if include "edgectl.singleNodeClaim" . }}
type: Recreate
{{- else if eq .Values.profile "gpu" }}
type: RollingUpdate
rollingUpdate: {maxSurge: 0, maxUnavailable: 1}
{{- else }}
type: RollingUpdate
rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
{{- end }}
{{- end }}

{{/* Exec sleep before SIGTERM, so the endpoint's removal reaches Services and proxies first. */}}
{{- define "edgectl.preStop" -}}
{{- if gt (int .Values.triton.preStopSleepSeconds) 0 }}
lifecycle:
  preStop:
    exec:
      command: [sleep, {{ .Values.triton.preStopSleepSeconds | quote }}]
{{- end }}
{{- end }}

{{/* Triton's --exit-timeout-secs: what is left of the grace period after the preStop sleep. */}}
{{- define "edgectl.exitTimeout" -}}
{{- sub (sub (int .Values.triton.terminationGracePeriodSeconds) (int .Values.triton.preStopSleepSeconds)) 5 }}
{{- end }}

{{/* The GPU node affinity term: GFD's product label (with the device plugin's -SHARED suffix on
     time-sliced nvidia.com/gpu) and, for whole GPUs, no time-slicing/MPS sharing on the node. */}}
{{- define "edgectl.gpuNodeTerm" -}}
{{- $gpu := .Values.gpu }}
{{- $expressions := list }}
{{- if $gpu.products }}
{{- $products := $gpu.products }}
{{- if and (eq $gpu.sharing "timeSlicing") (eq $gpu.resource "nvidia.com/gpu") }}
{{- $products = list }}
{{- range $gpu.products }}
{{- $products = append $products (printf "%s-SHARED" (trimSuffix "-SHARED" .)) }}
{{- end }}
{{- end }}
{{- $expressions = append $expressions (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" $products) }}
{{- end }}
{{- if eq $gpu.sharing "exclusive" }}
{{- $expressions = append $expressions (dict "key" "nvidia.com/gpu.sharing-strategy" "operator" "NotIn" "values" (list "mps" "time-slicing")) }}
{{- end }}
{{- toYaml (dict "matchExpressions" $expressions) }}
{{- end }}

{{/* Pod placement shared by the server and the build Job: GPU node affinity and taints.
     Arguments: root (the chart context), nearServer (prefer the server pods' node: the build
     Job writing a ReadWriteOnce claim they hold). */}}
{{- define "edgectl.placement" -}}
{{- $root := .root }}
{{- with $root }}
{{- $gpu := eq .Values.profile "gpu" }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := deepCopy .Values.affinity }}
{{- if and $gpu (not .Values.affinity.nodeAffinity) }}
{{- $term := include "edgectl.gpuNodeTerm" . | fromYaml }}
{{- if $term.matchExpressions }}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term))) }}
{{- end }}
{{- end }}
{{- if and $.nearServer (not .Values.affinity.podAffinity) }}
{{- $selector := dict "matchLabels" (include "edgectl.selectorLabels" . | fromYaml) }}
{{- $term := dict "weight" 100 "podAffinityTerm" (dict "labelSelector" $selector "topologyKey" "kubernetes.io/hostname") }}
{{- $_ := set $affinity "podAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tolerations := .Values.tolerations }}
{{- if and $gpu .Values.gpu.tolerateGpuTaint }}
{{- $tolerations = append $tolerations (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $gpu .Values.gpu.runtimeClassName }}
runtimeClassName: {{ .Values.gpu.runtimeClassName }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edgectl.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Checkov findings accepted on purpose, as checkov's skip annotations (id=reason).  Every
     finding of `checkov --framework kubernetes` on this chart is either fixed or listed here. */}}
{{- define "edgectl.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_15=Pull policy IfNotPresent on purpose - edge sites must restart pods without reaching the registry; pin images with image.digest instead of relying on Always
checkov.io/skip2: CKV_K8S_43=Images are values - set image.digest (rendered as repository@digest) to pin by digest; tags stay the readable default
checkov.io/skip3: CKV_K8S_40=Runs as uid 1000 - the non-root user that owns the files in NGC Triton images; runAsNonRoot is enforced by values.schema.json and podSecurityContext.runAsUser can be raised for other images
{{- end }}

{{/* The size of the per-pod /models emptyDir (the engines' run boards). */}}
{{- define "edgectl.modelRootSize" -}}
256Mi
{{- end }}

{{/* Egress to the workload identity endpoint (link-local, port 80) the cloud's SDKs fetch
     tokens from: GKE's metadata server, or the EKS Pod Identity agent. */}}
{{- define "edgectl.identityEgress" -}}
{{- $kind := .Values.networkPolicy.workloadIdentity }}
{{- if eq $kind "gke" }}
# GKE metadata server (Workload Identity Federation for GKE); some datapaths redirect it to :988.
- to: [{ipBlock: {cidr: 169.254.169.254/32}}]
  ports: [{port: 80, protocol: TCP}]
- to: [{ipBlock: {cidr: 169.254.169.252/32}}]
  ports: [{port: 988, protocol: TCP}]
{{- else if eq $kind "eks-pod-identity" }}
# EKS Pod Identity agent (AWS_CONTAINER_CREDENTIALS_FULL_URI), IPv4 and IPv6.
- to: [{ipBlock: {cidr: 169.254.170.23/32}}, {ipBlock: {cidr: "fd00:ec2::23/128"}}]
  ports: [{port: 80, protocol: TCP}]
{{- end }}
{{- end }}

{{/* A number as a quantity for HPA targets: "4" for 4, "800m" for 0.8. */}}
{{- define "edgectl.milli" -}}
{{- if eq (float64 .) (floor .) }}
{{- printf "%.0f" (float64 .) }}
{{- else }}
{{- printf "%.0fm" (mulf (float64 .) 1000.0) }}
{{- end }}
{{- end }}

{{/* The engine's series the autoscalers read, by profile, summed over the release's server pods
     (for KEDA; prometheus-adapter's rules select the same series per pod). */}}
{{- define "edgectl.scalingQueries" -}}
{{- $pods := printf "namespace=%q,pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" (include "edgectl.fullname" .)) }}
{{- if eq .Values.profile "gpu" }}
waiting: {{ printf "sum({__name__=~\"nv_trt_llm_request_metrics|nv_inference_pending_request_count\",request_type=~\"waiting|\",%s})" $pods | quote }}
kvCache: {{ printf "sum(nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\",%s})" $pods | quote }}
{{- else }}
waiting: {{ printf "sum({__name__=~\"edgectl_engine_waiting|nv_inference_pending_request_count\",%s})" $pods | quote }}
kvCache: {{ printf "sum(edgectl_engine_kv_cache_usage{%s})" $pods | quote }}
{{- end }}
{{- end }}
