{{/* Init container: copy the model store from s3:// or gs:// into the pod's model-data
     emptyDir.  Credentials come from an existing Secret mounted as a file, never from values. */}}
{{- define "edgectl.fetchContainer" -}}
{{- $store := .Values.modelRepository.objectStorage }}
{{- $s3 := hasPrefix "s3://" $store.url }}
{{- $image := ternary $store.s3Image $store.gcsImage $s3 }}
{{- $credentials := printf "/var/run/secrets/edgectl/storage/%s" $store.credentialsKey }}
- name: fetch-model-store
  image: {{ include "edgectl.imageRef" $image | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if $s3 }}
  command: [aws, s3, sync, {{ $store.url | quote }}, /store, --only-show-errors, --no-progress{{ with $store.endpointUrl }}, --endpoint-url, {{ . | quote }}{{ end }}]
  {{- else }}
  command: [gcloud, storage, rsync, --recursive, {{ $store.url | quote }}, /store]
  {{- end }}
  env:
    - {name: HOME, value: /tmp}
    {{- if $s3 }}
    {{- with $store.region }}
    - {name: AWS_REGION, value: {{ . | quote }}}
    {{- end }}
    {{- if $store.credentialsSecret }}
    - {name: AWS_SHARED_CREDENTIALS_FILE, value: {{ $credentials | quote }}}
    {{- end }}
    {{- else }}
    - {name: CLOUDSDK_CONFIG, value: /tmp/gcloud}
    {{- if $store.credentialsSecret }}
    - {name: CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE, value: {{ $credentials | quote }}}
    {{- end }}
    {{- end }}
  resources:
    {{- toYaml .Values.initResources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: model-data, mountPath: /store}
    - {name: tmp, mountPath: /tmp}
    {{- if $store.credentialsSecret }}
    - {name: storage-credentials, mountPath: /var/run/secrets/edgectl/storage, readOnly: true}
    {{- end }}
{{- end }}
