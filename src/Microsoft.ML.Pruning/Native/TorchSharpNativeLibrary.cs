// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Pruning.Native
{
    /// <summary>
    /// Makes TorchSharp's native shim loadable however the application references this library, and names the real
    /// cause when it still cannot load.
    /// </summary>
    /// <remarks>
    /// TorchSharp 0.107's <c>libLibTorchSharp.so</c> asks for <c>GLIBCXX_3.4.32</c>, which the libstdc++ of Debian 12
    /// and Ubuntu 22.04 lacks; the one symbol of that version it imports needs no relocation, so the requirement can be
    /// marked weak (<see cref="ElfVersionNeeds"/>). The package's build step (buildTransitive) does that in the build and
    /// publish output of package consumers only: a <c>ProjectReference</c>, or an output copied without the build step,
    /// keeps the original. So, as this assembly loads (before any libtorch call of the library), the copy the
    /// application will load is patched in place when the system libstdc++ lacks the version. Where that is not possible
    /// TorchSharp fails with a message about a missing package reference; <see cref="EnsureLoaded"/> loads the shim
    /// first and throws an exception that says what is really wrong. Setting the environment variable
    /// <c>MLNET_PRUNING_NATIVE_FIXUP=0</c> turns the run-time patch off.
    /// </remarks>
    internal static class TorchSharpNativeLibrary
    {
        /// <summary>The file name of TorchSharp's native shim on Linux.</summary>
        internal const string FileName = "libLibTorchSharp.so";

        /// <summary>The symbol version the shim asks for and older libstdc++ lack.</summary>
        internal const string RequiredVersion = "GLIBCXX_3.4.32";

        /// <summary>The environment variable that turns the run-time patch off when set to 0 or false.</summary>
        internal const string DisableVariable = "MLNET_PRUNING_NATIVE_FIXUP";

        /// <summary>Where Linux distributions keep the system libstdc++.</summary>
        internal static readonly string[] SystemLibStdCxx =
        {
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6", "/lib64/libstdc++.so.6",
        };

        private static readonly object _gate = new();
        private static PrepareResult? _prepared;
        private static bool _loaded;

        /// <summary>What <see cref="Prepare"/> found and did.</summary>
        /// <param name="Path">The copy of the shim the application loads (the first found), or null when there is none.</param>
        /// <param name="Patched">The copies whose requirement was marked weak now.</param>
        /// <param name="Problem">Why a copy that needed the patch could not get it, or null.</param>
        internal sealed record PrepareResult(string? Path, IReadOnlyList<string> Patched, string? Problem);

        [ModuleInitializer]
        [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
            Justification = "The shim must be patched before TorchSharp loads it, whichever entry point of this library runs first.")]
        internal static void Initialize()
        {
            try
            {
                if (!OperatingSystem.IsLinux() || IsDisabled())
                    return;
                PrepareResult result = Prepare(SearchDirectories(), SystemLibStdCxx);
                lock (_gate)
                    _prepared = result;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                // Never fail the assembly's load: EnsureLoaded reports what the shim's loading says.
            }
        }

        /// <summary>
        /// Patches every copy of the shim in <paramref name="directories"/> that needs <see cref="RequiredVersion"/> when no
        /// library of <paramref name="systemLibraries"/> defines it. Idempotent; a copy that cannot be written is reported,
        /// not thrown.
        /// </summary>
        internal static PrepareResult Prepare(IEnumerable<string> directories, IEnumerable<string> systemLibraries)
        {
            string[] copies = directories
                .Select(directory => Path.Combine(directory, FileName))
                .Where(File.Exists)
                .Distinct(StringComparer.Ordinal)
                .ToArray();
            if (copies.Length == 0)
                return new PrepareResult(null, Array.Empty<string>(), null);
            if (SystemDefinesVersion(systemLibraries))
                return new PrepareResult(copies[0], Array.Empty<string>(), null);

            var patched = new List<string>();
            string? problem = null;
            foreach (string copy in copies)
            {
                try
                {
                    if (ElfVersionNeeds.MarkWeak(copy, RequiredVersion) == ElfVersionNeeds.PatchResult.Patched)
                        patched.Add(copy);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
                {
                    problem ??= $"{copy} could not be patched ({ex.Message})";
                }
            }
            return new PrepareResult(copies[0], patched, problem);
        }

        /// <summary>
        /// Loads the shim before TorchSharp does. Throws <see cref="DllNotFoundException"/> naming the cause when it cannot
        /// load; does nothing off Linux, when no copy was found (TorchSharp then reports the missing package), or once loaded.
        /// </summary>
        internal static void EnsureLoaded()
        {
            if (!OperatingSystem.IsLinux())
                return;
            lock (_gate)
            {
                if (_loaded || _prepared?.Path is not string path)
                    return;
                try
                {
                    NativeLibrary.Load(path);
                    _loaded = true;
                }
                catch (DllNotFoundException ex)
                {
                    throw new DllNotFoundException(Describe(path, ex.Message, _prepared.Problem), ex);
                }
            }
        }

        /// <summary>The message for a shim at <paramref name="path"/> that failed to load with <paramref name="loaderMessage"/>.</summary>
        internal static string Describe(string path, string loaderMessage, string? patchProblem)
        {
            string cause;
            if (loaderMessage.Contains(RequiredVersion, StringComparison.Ordinal))
            {
                cause = $"it needs {RequiredVersion}, which this system's libstdc++ lacks (Debian 12 and Ubuntu 22.04 stop at GLIBCXX_3.4.30), " +
                    "and the requirement could not be marked weak" + (patchProblem is null ? "" : $": {patchProblem}") + ". " +
                    "Run the application once from a folder it can write to, build or publish it with the Microsoft.ML.Pruning package " +
                    $"(its build step patches the output copy), or unset {DisableVariable} if it is set to 0.";
            }
            else if (loaderMessage.Contains("libtorch", StringComparison.Ordinal) || loaderMessage.Contains("libc10", StringComparison.Ordinal))
            {
                cause = "a libtorch library it links to is missing: the application needs libtorch's native files next to it " +
                    "(the package libtorch-cpu-linux-x64, which Microsoft.ML.Pruning brings on Linux x64).";
            }
            else
            {
                cause = "see the loader's message below.";
            }
            return $"Microsoft.ML.Pruning cannot load TorchSharp's native library {path}: {cause}{Environment.NewLine}Loader: {loaderMessage}";
        }

        /// <summary>The folders the runtime searches for native libraries, then the application's and TorchSharp's own.</summary>
        internal static IEnumerable<string> SearchDirectories()
        {
            var directories = new List<string>();
            if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string searchPath)
                directories.AddRange(searchPath.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries));
            directories.Add(AppContext.BaseDirectory);
            directories.Add(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native"));
            string torchSharp = typeof(TorchSharp.torch).Assembly.Location;
            if (!string.IsNullOrEmpty(torchSharp) && Path.GetDirectoryName(torchSharp) is string torchSharpDirectory)
            {
                directories.Add(torchSharpDirectory);
                directories.Add(Path.Combine(torchSharpDirectory, "runtimes", "linux-x64", "native"));
            }
            return directories.Select(d => Path.GetFullPath(d)).Distinct(StringComparer.Ordinal);
        }

        private static bool SystemDefinesVersion(IEnumerable<string> systemLibraries)
            => systemLibraries.Any(library => File.Exists(library) && ElfVersionNeeds.FileContainsVersionString(library, RequiredVersion));

        private static bool IsDisabled()
            => Environment.GetEnvironmentVariable(DisableVariable) is string value
                && (value == "0" || value.Equals("false", StringComparison.OrdinalIgnoreCase));
    }
}
