#!/usr/bin/env bash
# Builds and runs samples/ConsumerApp/Program.cs outside the repository, where the repository's Directory.Build.*
# files do not apply, the three ways an application consumes the library:
#   project  - a ProjectReference to src/Microsoft.ML.Pruning (no build step patches TorchSharp's shim: the library
#              does it as it loads)
#   package  - a PackageReference to the package made by `dotnet pack`, restored from a local folder
#   publish  - `dotnet publish -r linux-x64` of the package consumer, run from the publish folder
# Each route passes when the app prints "consumer ok". Prints one line per route and exits with the number of
# failed routes. Everything happens in a temporary folder; the package gets a version of its own so that the NuGet
# cache never serves an older build, and is removed from the cache afterwards (KEEP_CONSUMER_WORK=1 keeps the
# temporary folder and prints its path, to read the logs).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
version="0.0.0-local.$(date +%s).$$"
cache=$(dotnet nuget locals global-packages --list 2>/dev/null | sed -n 's/^global-packages: *//p')
cleanup() {
  rm -rf "$work"
  [ -n "$cache" ] && rm -rf "${cache%/}/microsoft.ml.pruning/$version"
}
[ -n "${KEEP_CONSUMER_WORK:-}" ] && echo "work folder: $work" || trap cleanup EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

failed=0
report() { # name, log, status
  if [ "$3" -eq 0 ] && grep -q '^consumer ok$' "$2"; then
    echo "consumer [$1]: ok ($(grep -m1 '^dense ' "$2"))"
  else
    echo "consumer [$1]: FAILED; last lines of its log:"
    tail -n 25 "$2" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

# Whether the shim in a folder has GLIBCXX_3.4.32 marked weak (readelf is optional; "unknown" without it).
shim_state() {
  local shim
  shim=$(find "$1" -name libLibTorchSharp.so -print -quit)
  if [ -z "$shim" ]; then echo "absent"; return; fi
  if ! command -v readelf >/dev/null; then echo "unknown"; return; fi
  local versions
  versions=$(readelf -V "$shim")   # not piped into grep -q: with pipefail, readelf's SIGPIPE would read as "no match"
  if [[ "$versions" == *"GLIBCXX_3.4.32  Flags: WEAK"* ]]; then echo "weak"; else echo "strong"; fi
}

write_project() { # folder, reference item
  mkdir -p "$1"
  cp "$repo/samples/ConsumerApp/Program.cs" "$1/"
  cat > "$1/ConsumerApp.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
  </PropertyGroup>
  <ItemGroup>
    $2
  </ItemGroup>
</Project>
EOF
}

# 1. ProjectReference.
write_project "$work/project" "<ProjectReference Include=\"$repo/src/Microsoft.ML.Pruning/Microsoft.ML.Pruning.csproj\" />"
log="$work/project.log"
{ dotnet build "$work/project" -c Release && echo "shim after build: $(shim_state "$work/project/bin")" \
  && dotnet "$work/project/bin/Release/net10.0/ConsumerApp.dll" && echo "shim after run: $(shim_state "$work/project/bin")"; } >"$log" 2>&1
report project "$log" $?
grep -E '^shim after' "$log" | sed 's/^/    /'

# 2. Package from a local folder feed (the machine's default source still serves the dependencies).
log="$work/package.log"
{ dotnet pack "$repo/src/Microsoft.ML.Pruning" -c Release -o "$work/feed" -p:Version="$version"; } >"$log" 2>&1
write_project "$work/package" "<PackageReference Include=\"Microsoft.ML.Pruning\" Version=\"$version\" />"
cat > "$work/package/nuget.config" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="local-feed" value="$work/feed" />
  </packageSources>
</configuration>
EOF
{ dotnet build "$work/package" -c Release && echo "shim after build: $(shim_state "$work/package/bin")" \
  && dotnet "$work/package/bin/Release/net10.0/ConsumerApp.dll"; } >>"$log" 2>&1
report package "$log" $?
grep -E '^shim after' "$log" | sed 's/^/    /'

# 3. Published output of the package consumer, natives at the root of the folder (-r linux-x64).
log="$work/publish.log"
{ dotnet publish "$work/package" -c Release -r linux-x64 --self-contained false -o "$work/publish" \
  && echo "shim after publish: $(shim_state "$work/publish")" \
  && (cd / && dotnet "$work/publish/ConsumerApp.dll"); } >"$log" 2>&1
report publish "$log" $?
grep -E '^shim after' "$log" | sed 's/^/    /'

exit "$failed"
