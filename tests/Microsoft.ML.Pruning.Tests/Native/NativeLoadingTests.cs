// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using System.IO;
using System.Runtime.InteropServices;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;

namespace Microsoft.ML.Pruning.Tests.Native
{
    [TestClass]
    public sealed class NativeLoadingTests
    {
        private const string Version = "GLIBCXX_3.4.32";

        [TestMethod]
        public void TorchInitializesAndComputes()
        {
            using var a = torch.tensor(new float[] { 1, 2, 3 });
            using var b = a * 2;
            CollectionAssert.AreEqual(new float[] { 2, 4, 6 }, b.data<float>().ToArray());
        }

        [TestMethod]
        public void LibTorchWarningsAreLimitedToErrorsInTheNativeEnvironment()
        {
            // Set by the library's module initializer before the first libtorch call (this process sets nothing itself).
            Assert.AreEqual("ERROR", Environment.GetEnvironmentVariable(NativeEnvironment.LogLevelVariable));
            if (!OperatingSystem.IsWindows())
                Assert.AreEqual("ERROR", Marshal.PtrToStringUTF8(getenv(NativeEnvironment.LogLevelVariable)), "libtorch reads the C library's environment");
        }

        [TestMethod]
        public void OpenMpSpinCountIsInTheNativeEnvironmentUnlessAWaitPolicyIsSet()
        {
            string? policy = Environment.GetEnvironmentVariable(NativeEnvironment.WaitPolicyVariable);
            string? spins = Environment.GetEnvironmentVariable(NativeEnvironment.SpinCountVariable);
            if (policy is null)
                Assert.IsNotNull(spins, "the library sets the spin count when the application sets neither variable");
            if (spins is not null && !OperatingSystem.IsWindows())
                Assert.AreEqual(spins, Marshal.PtrToStringUTF8(getenv(NativeEnvironment.SpinCountVariable)), "libgomp reads the C library's environment");
        }

        [TestMethod]
        public void NativeDefaultsLeaveWhatTheApplicationSetAlone()
        {
            static string Describe(IReadOnlyList<(string Name, string Value)> defaults) => string.Join(";", defaults.Select(d => d.Name + "=" + d.Value));
            var none = new Dictionary<string, string>();
            Assert.AreEqual("TORCH_CPP_LOG_LEVEL=ERROR;GOMP_SPINCOUNT=10000", Describe(NativeEnvironment.Defaults(n => none.GetValueOrDefault(n))));
            var policy = new Dictionary<string, string> { ["OMP_WAIT_POLICY"] = "ACTIVE" };
            Assert.AreEqual("TORCH_CPP_LOG_LEVEL=ERROR", Describe(NativeEnvironment.Defaults(n => policy.GetValueOrDefault(n))));
            var both = new Dictionary<string, string> { ["GOMP_SPINCOUNT"] = "0", ["TORCH_CPP_LOG_LEVEL"] = "INFO" };
            Assert.AreEqual("", Describe(NativeEnvironment.Defaults(n => both.GetValueOrDefault(n))));
        }

        [DllImport("libc", ExactSpelling = true)]
        private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);

        [TestMethod]
        public void BuildOutputLibraryHasTheVersionMarkedWeakOrNeedsNoPatch()
        {
            if (!OperatingSystem.IsLinux())
                return;
            string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            Assert.IsTrue(File.Exists(library), library);
            ushort? flags = ElfVersionNeeds.GetFlags(library, Version);
            Assert.IsNotNull(flags, "TorchSharp 0.107's shim is expected to need " + Version);
            bool systemHasVersion = File.Exists("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
                && ElfVersionNeeds.FileContainsVersionString("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", Version);
            Assert.AreEqual(systemHasVersion ? 0 : 2, flags!.Value & 2);
        }

        [TestMethod]
        public void MarkWeakIsIdempotentAndTouchesOnlyTheFlag()
        {
            string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            if (!File.Exists(library))
                return;
            string copy = Path.Combine(Path.GetTempPath(), "pruning-elf-" + Guid.NewGuid().ToString("N") + ".so");
            try
            {
                File.Copy(library, copy);
                byte[] before = File.ReadAllBytes(copy);
                ElfVersionNeeds.PatchResult first = ElfVersionNeeds.MarkWeak(copy, Version);
                ElfVersionNeeds.PatchResult second = ElfVersionNeeds.MarkWeak(copy, Version);
                Assert.AreEqual(ElfVersionNeeds.PatchResult.AlreadyWeak, second);
                Assert.AreEqual(2, ElfVersionNeeds.GetFlags(copy, Version)!.Value & 2);
                byte[] after = File.ReadAllBytes(copy);
                Assert.AreEqual(before.Length, after.Length);
                int differing = 0;
                for (int i = 0; i < before.Length; i++)
                    differing += before[i] != after[i] ? 1 : 0;
                Assert.AreEqual(first == ElfVersionNeeds.PatchResult.Patched ? 1 : 0, differing);
                Assert.AreEqual(ElfVersionNeeds.PatchResult.NotNeeded, ElfVersionNeeds.MarkWeak(copy, "GLIBCXX_9.9.9"));
            }
            finally
            {
                File.Delete(copy);
            }
        }

        [TestMethod]
        public void NonElfInputIsRejectedWithAClearMessage()
        {
            string path = Path.Combine(Path.GetTempPath(), "pruning-not-elf-" + Guid.NewGuid().ToString("N"));
            File.WriteAllText(path, "definitely not an ELF image, but long enough to have a header of 64 bytes......");
            try
            {
                var ex = Assert.ThrowsExactly<InvalidDataException>(() => ElfVersionNeeds.MarkWeak(path, Version));
                StringAssert.Contains(ex.Message, "not an ELF file");
            }
            finally
            {
                File.Delete(path);
            }
        }
    }
}
