// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Pruning.Runtime
{
    /// <summary>
    /// The native settings this library gives libtorch before its first call, each only where the application has not
    /// set the variable itself. They are applied as this assembly loads (a module initializer), so they take effect when
    /// the application's first libtorch call goes through this library; an application that calls TorchSharp before
    /// touching this library keeps libtorch's own defaults.
    /// <list type="bullet">
    /// <item><c>TORCH_CPP_LOG_LEVEL=ERROR</c>: keeps libtorch's warnings off the application's standard error. On CPUs
    /// without AVX2 (and in many virtual machines) libtorch tries NNPACK for every batched convolution at inference, fails,
    /// and prints "Could not initialize NNPACK! Reason: Unsupported hardware." each time — over 100,000 lines for one
    /// evaluation of the test set — before falling back to its other kernels. libtorch applies the variable only when
    /// asked to (PyTorch does at import, TorchSharp does not), so this also has libtorch's c10 library read it.</item>
    /// <item><c>GOMP_SPINCOUNT=10000</c> (unless <c>OMP_WAIT_POLICY</c> or <c>GOMP_SPINCOUNT</c> is set): how long
    /// libtorch's OpenMP worker threads spin after a parallel step before they sleep. libgomp's default (300,000 spins, a few
    /// milliseconds) has them keep a core busy long after each libtorch step, and the compact runtime's managed steps that
    /// follow lose that core: a model whose plan mixes both (a kernel-pruned network with its fully connected layers on
    /// libtorch) scored 256 images in 29–35 ms with the default and 22–24 ms with 10,000 spins, while the training
    /// throughput of the small VGG did not move (<c>-- plan</c> and <c>-- train --quick</c>; README, "Synaptic Strength and kernel pruning").
    /// Ten thousand spins still cover the short gaps between libtorch's own consecutive steps.</item>
    /// </list>
    /// </summary>
    internal static class NativeEnvironment
    {
        internal const string LogLevelVariable = "TORCH_CPP_LOG_LEVEL";

        internal const string SpinCountVariable = "GOMP_SPINCOUNT";

        internal const string WaitPolicyVariable = "OMP_WAIT_POLICY";

        internal const string SpinCount = "10000";

        [ModuleInitializer]
        [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries",
            Justification = "The settings must be in place before the first libtorch call, whichever entry point of this library makes it.")]
        internal static void Initialize()
        {
            try
            {
                foreach ((string name, string value) in Defaults(Environment.GetEnvironmentVariable))
                {
                    Environment.SetEnvironmentVariable(name, value);
                    // .NET keeps its own copy of the environment on Unix; native code reads the C library's.
                    if (!OperatingSystem.IsWindows())
                        _ = setenv(name, value, 0);
                }
                InitializeC10Logging();
            }
            catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                // Another platform or libtorch build (the entry point is the Itanium C++ ABI name): libtorch keeps its level.
            }
        }

        /// <summary>The variables this library sets, given the application's environment: none that the application set.</summary>
        internal static IReadOnlyList<(string Name, string Value)> Defaults(Func<string, string?> environment)
        {
            var defaults = new List<(string, string)>();
            if (environment(LogLevelVariable) is null)
                defaults.Add((LogLevelVariable, "ERROR"));
            if (environment(SpinCountVariable) is null && environment(WaitPolicyVariable) is null)
                defaults.Add((SpinCountVariable, SpinCount));
            return defaults;
        }

        /// <summary><c>c10::initLogging()</c>: applies <c>TORCH_CPP_LOG_LEVEL</c>.</summary>
        [DllImport("c10", EntryPoint = "_ZN3c1011initLoggingEv", ExactSpelling = true)]
        private static extern void InitializeC10Logging();

        [DllImport("libc", ExactSpelling = true)]
        private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
    }
}
