#!/usr/bin/env bash
# The demo in one command: installs Fashion-MNIST when it is missing (eng/install-dataset.sh), then trains, prunes,
# compares, saves, reloads and predicts (samples/FashionMnistClassifier). Arguments go to the demo (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash eng/install-dataset.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
exec dotnet run -c Release --project samples/FashionMnistClassifier -- "$@"
