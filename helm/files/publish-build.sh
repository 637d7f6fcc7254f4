# Build once per build id, then publish: copy the result into builds/<id>/ and switch the
# `current` symlink to it with one rename.  Server pods resolve `current` when they start,
# so no running pod sees a file change; `previous` keeps the build before for rollback.
store="${EDGECTL_STORE:-/models}"
id="$EDGECTL_BUILD_ID"
dest="$store/builds/$id"
if [ -f "$dest/.complete" ]; then
  echo "engine build $id: already published, switching to it"
else
  echo "engine build $id: building"
  "$@"
  if [ -z "$(ls -A "$store/repository" 2>/dev/null)" ]; then
    echo "engine build $id: the command left no $store/repository" >&2
    exit 1
  fi
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  cp -a --reflink=auto "$store/repository" "$dest.partial/repository"
  if [ -d "$store/artifacts" ]; then
    cp -a --reflink=auto "$store/artifacts" "$dest.partial/artifacts"
  else
    mkdir "$dest.partial/artifacts"
  fi
  touch "$dest.partial/.complete"
  mv "$dest.partial" "$dest"
fi
live="$(readlink "$store/current" 2>/dev/null || true)"
if [ "$live" != "builds/$id" ]; then
  if [ -n "$live" ]; then
    ln -sfn "$live" "$store/previous.next"
    mv -T "$store/previous.next" "$store/previous"
  fi
  ln -sfn "builds/$id" "$store/current.next"
  mv -T "$store/current.next" "$store/current"
fi
kept="$(readlink "$store/previous" 2>/dev/null || true)"
for old in "$store"/builds/*; do
  [ -e "$old" ] || continue
  case "builds/${old##*/}" in
    "builds/$id" | "$kept") ;;
    *) rm -rf "$old" ;;
  esac
done
echo "engine build $id: live as $store/current (previous: ${kept:-none})"
