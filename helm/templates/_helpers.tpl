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
     new Job runs (Job pod templates are immutable) and the server waits for its marker. */}}
{{- define "edgectl.buildId" -}}
{{- $build := .Values.modelRepository.engineBuild }}
{{- $inputs := dict "image" (include "edgectl.buildImage" .) "command" $build.command "workingDir" $build.workingDir "env" $build.env "gpus" (include "edgectl.gpuCount" .) "useGpus" $build.useGpus "config" .Values.edgectlConfig }}
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

{{/* Resources of a GPU-using container: the GPUs come from tensorParallel x pipelineParallel. */}}
{{- define "edgectl.withGpus" -}}
{{- $resources := deepCopy .resources }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" .gpus) (default dict $resources.requests)) }}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" .gpus) (default dict $resources.limits)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Pod placement shared by the server and the build Job: GPU product affinity and taints. */}}
{{- define "edgectl.placement" -}}
{{- $gpu := eq .Values.profile "gpu" }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := deepCopy .Values.affinity }}
{{- if and $gpu .Values.gpu.products }}
{{- $term := dict "matchExpressions" (list (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" .Values.gpu.products)) }}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term))) }}
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
