{{/* Multi-model time-slicing in a server pod.  The policy is an `edgectl timeslice` policy
     file (values.schema.json mirrors its pydantic schema); these checks refuse what a pod
     cannot enforce.  The pod enforces it through the slot board the CPU engine steps consult:
     the init container below writes it with `edgectl timeslice board` before Triton starts. */}}
{{- define "edgectl.validateTimeslice" -}}
{{- $policy := .timeslice.policy }}
{{- if eq .profile "gpu" }}
{{- fail "timeslice.enabled needs profile cpu: the tensorrtllm backend has no per-step hook, so nothing in a GPU pod would enforce the policy's shares (share GPUs at the device level instead: gpu.sharing timeSlicing or mig)" }}
{{- end }}
{{- if ne (default "auto" $policy.mode) "coresident" }}
{{- fail (printf "timeslice.policy.mode must be coresident in the chart, got %s: the pod loads every model in triton.models at start and keeps them; swapping (mode swap, or auto over budget) needs the edgectl control plane (edgectl timeslice apply)" (default "auto" $policy.mode)) }}
{{- end }}
{{- $names := list }}
{{- $memory := 0.0 }}
{{- $estimated := false }}
{{- range $index, $model := $policy.models }}
{{- $where := printf "timeslice.policy.models.%d (%s)" $index $model.name }}
{{- if has $model.name $names }}
{{- fail (printf "%s: %s is listed twice" $where $model.name) }}
{{- end }}
{{- $names = append $names $model.name }}
{{- if not (has $model.name $.triton.models) }}
{{- fail (printf "%s: not in triton.models; the pod serves and keeps loaded only those models" $where) }}
{{- end }}
{{- if or $model.recipe (not $model.artifact) }}
{{- fail (printf "%s: set artifact (the built model under /models/artifacts its engine step serves), not recipe: a pod serves the rendered repository and builds nothing" $where) }}
{{- end }}
{{- if not (hasPrefix "/models/artifacts/" $model.artifact) }}
{{- fail (printf "%s: artifact %s must be an absolute path under /models/artifacts/, where the store's artifacts are mounted" $where $model.artifact) }}
{{- end }}
{{- if ne (default "cpu" $model.engine) "cpu" }}
{{- fail (printf "%s: engine must be cpu with profile cpu (the slot board shares CPU engine steps only)" $where) }}
{{- end }}
{{- if $model.memory_gb }}
{{- $memory = addf $memory $model.memory_gb }}
{{- else }}
{{- $estimated = true }}
{{- end }}
{{- end }}
{{- if and (not $estimated) (gt (float64 $memory) (float64 $policy.memory_budget_gb)) }}
{{- fail (printf "timeslice.policy: the models need %g GB together (memory_gb) but memory_budget_gb is %g, and a pod keeps every model loaded; raise the budget or serve fewer models" (float64 $memory) (float64 $policy.memory_budget_gb)) }}
{{- end }}
{{- end }}

{{/* Init container: check the mounted policy against the served repository and write the slot
     board where its CPU engine steps read it (their timeslice_dir, /models/run/timeslice when
     rendered with --out /models/repository).  Runs after the store fetch, before Triton. */}}
{{- define "edgectl.timesliceBoardContainer" -}}
- name: timeslice-board
  image: {{ include "edgectl.imageRef" .Values.image | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [edgectl, timeslice, board, /etc/edgectl/timeslice/policy.yaml, --repository, /models/repository]
  env:
    - {name: HOME, value: /tmp}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: model-root, mountPath: /models}
    - {name: model-data, mountPath: /models/repository, subPath: {{ include "edgectl.storePrefix" . }}repository, readOnly: true}
    - {name: model-data, mountPath: /models/artifacts, subPath: {{ include "edgectl.storePrefix" . }}artifacts, readOnly: true}
    - {name: timeslice, mountPath: /etc/edgectl/timeslice, readOnly: true}
{{- end }}
