// Licensed under the MIT license.

using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Pruning.Native;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.Native
{
    /// <summary>The fix-up the library applies as it loads, for applications built without the package's build step.</summary>
    [TestClass]
    public sealed class RuntimeNativeFixupTests
    {
        private const string Version = TorchSharpNativeLibrary.RequiredVersion;
        private string _directory = null!;

        [TestInitialize]
        public void CreateDirectory()
        {
            _directory = Path.Combine(Path.GetTempPath(), "pruning-native-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(_directory);
        }

        [TestCleanup]
        public void DeleteDirectory() => Directory.Delete(_directory, recursive: true);

        private static string BuildOutputShim => Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", TorchSharpNativeLibrary.FileName);

        /// <summary>A copy of the shim as TorchSharp ships it: the version requirement not weak.</summary>
        private string UnpatchedCopy(string directory)
        {
            Directory.CreateDirectory(directory);
            string copy = Path.Combine(directory, TorchSharpNativeLibrary.FileName);
            byte[] image = File.ReadAllBytes(BuildOutputShim);
            int vernaux = ElfVersionNeeds.FindVernaux(image, Version);
            Assert.IsTrue(vernaux > 0, "TorchSharp 0.107's shim is expected to need " + Version);
            image[vernaux + 4] &= unchecked((byte)~2);
            File.WriteAllBytes(copy, image);
            Assert.AreEqual(0, ElfVersionNeeds.GetFlags(copy, Version)!.Value & 2);
            return copy;
        }

        private string FakeLibStdCxx(bool definesVersion)
        {
            string path = Path.Combine(_directory, definesVersion ? "new-libstdc++.so.6" : "old-libstdc++.so.6");
            File.WriteAllText(path, definesVersion ? "\0GLIBCXX_3.4.31\0" + Version + "\0" : "\0GLIBCXX_3.4.30\0GLIBCXX_3.4.320\0");
            return path;
        }

        [TestMethod]
        public void CopiesNeedingTheVersionArePatchedWhenTheSystemLacksIt()
        {
            if (!File.Exists(BuildOutputShim))
                Assert.Fail("The build output has no " + BuildOutputShim);
            string appDirectory = Path.Combine(_directory, "app");
            string rootCopy = UnpatchedCopy(appDirectory);
            string runtimesCopy = UnpatchedCopy(Path.Combine(appDirectory, "runtimes", "linux-x64", "native"));

            TorchSharpNativeLibrary.PrepareResult result = TorchSharpNativeLibrary.Prepare(
                new[] { Path.Combine(appDirectory, "runtimes", "linux-x64", "native"), Path.Combine(_directory, "missing"), appDirectory },
                new[] { FakeLibStdCxx(definesVersion: false), Path.Combine(_directory, "absent.so") });

            Assert.AreEqual(runtimesCopy, result.Path, "the first folder searched that holds the shim");
            CollectionAssert.AreEquivalent(new[] { runtimesCopy, rootCopy }, result.Patched.ToArray());
            Assert.IsNull(result.Problem);
            Assert.AreEqual(2, ElfVersionNeeds.GetFlags(rootCopy, Version)!.Value & 2);
            Assert.AreEqual(2, ElfVersionNeeds.GetFlags(runtimesCopy, Version)!.Value & 2);

            // Idempotent: the next start of the application finds nothing to do.
            TorchSharpNativeLibrary.PrepareResult again = TorchSharpNativeLibrary.Prepare(new[] { appDirectory }, new[] { FakeLibStdCxx(false) });
            Assert.AreEqual(0, again.Patched.Count);
            Assert.AreEqual(rootCopy, again.Path);
        }

        [TestMethod]
        public void NothingIsPatchedWhenTheSystemLibStdCxxDefinesTheVersion()
        {
            string copy = UnpatchedCopy(Path.Combine(_directory, "app"));
            byte[] before = File.ReadAllBytes(copy);

            var result = TorchSharpNativeLibrary.Prepare(new[] { Path.Combine(_directory, "app") }, new[] { FakeLibStdCxx(definesVersion: true) });

            Assert.AreEqual(copy, result.Path);
            Assert.AreEqual(0, result.Patched.Count);
            CollectionAssert.AreEqual(before, File.ReadAllBytes(copy));
        }

        [TestMethod]
        public void NoCopyFoundIsNoError()
        {
            var result = TorchSharpNativeLibrary.Prepare(new[] { _directory }, new[] { FakeLibStdCxx(false) });
            Assert.IsNull(result.Path);
            Assert.IsNull(result.Problem);
        }

        [TestMethod]
        public void ACopyThatIsNotElfIsReportedNotThrown()
        {
            File.WriteAllText(Path.Combine(_directory, TorchSharpNativeLibrary.FileName), new string('x', 100));
            var result = TorchSharpNativeLibrary.Prepare(new[] { _directory }, new[] { FakeLibStdCxx(false) });
            StringAssert.Contains(result.Problem, "could not be patched");
            StringAssert.Contains(result.Problem, "not an ELF file");
        }

        [TestMethod]
        public void TheApplicationsOwnFoldersAreSearched()
        {
            var directories = TorchSharpNativeLibrary.SearchDirectories();
            CollectionAssert.Contains(new System.Collections.Generic.List<string>(directories), Path.GetFullPath(AppContext.BaseDirectory));
            CollectionAssert.Contains(new System.Collections.Generic.List<string>(directories),
                Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native")));
        }

        [TestMethod]
        public void AnUnpatchedShimFailsToLoadWithTheRealCause()
        {
            if (!OperatingSystem.IsLinux())
                return;
            string copy = UnpatchedCopy(Path.Combine(_directory, "readonly"));
            bool systemHasVersion = Array.Exists(TorchSharpNativeLibrary.SystemLibStdCxx,
                l => File.Exists(l) && ElfVersionNeeds.FileContainsVersionString(l, Version));
            if (systemHasVersion)
            {
                // A libstdc++ of GCC 13 or later: the shim loads as TorchSharp ships it.
                System.Runtime.InteropServices.NativeLibrary.Free(System.Runtime.InteropServices.NativeLibrary.Load(copy));
                return;
            }

            var loaderError = Assert.ThrowsExactly<DllNotFoundException>(() => System.Runtime.InteropServices.NativeLibrary.Load(copy));
            string message = TorchSharpNativeLibrary.Describe(copy, loaderError.Message, $"{copy} could not be patched (read-only file system)");

            StringAssert.Contains(message, copy);
            StringAssert.Contains(message, "needs " + Version + ", which this system's libstdc++ lacks");
            StringAssert.Contains(message, "read-only file system");
            StringAssert.Contains(message, "Microsoft.ML.Pruning package");
            Assert.IsFalse(message.Contains("doesn't contain a reference", StringComparison.Ordinal));
        }

        [TestMethod]
        public void AMissingLibTorchIsNamed()
        {
            string message = TorchSharpNativeLibrary.Describe("/app/libLibTorchSharp.so",
                "libtorch_cpu.so: cannot open shared object file: No such file or directory", null);
            StringAssert.Contains(message, "libtorch-cpu-linux-x64");
            StringAssert.Contains(message, "libtorch_cpu.so: cannot open shared object file");
        }

        [TestMethod]
        public void TheShimThisProcessUsesLoads()
        {
            // The library's entry points call this before their first libtorch call; here the build output is patched.
            TorchSharpNativeLibrary.EnsureLoaded();
            using var sum = TorchSharp.torch.ones(3).sum();
            Assert.AreEqual(3f, sum.item<float>());
        }
    }
}
