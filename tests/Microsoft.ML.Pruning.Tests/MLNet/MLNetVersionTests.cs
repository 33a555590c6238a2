// Licensed under the MIT license.

using System;
using System.Linq;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.ML.Pruning.MLNet;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace Microsoft.ML.Pruning.Tests.MLNet
{
    /// <summary>The ML.NET the library runs against, and the internals route it takes into it (eng/Publicize.targets).</summary>
    [TestClass]
    public sealed class MLNetVersionTests
    {
        [TestMethod]
        public void RunsAgainstMLNet6()
        {
            // ML.NET's assembly versions stay 1.0.0.0; the informational version is the package's.
            StringAssert.StartsWith(InformationalVersion(typeof(MLContext)), "6.0.0", "Microsoft.ML");
            StringAssert.StartsWith(InformationalVersion(typeof(Microsoft.ML.Transforms.Image.ImagePixelExtractingEstimator)), "6.0.0", "ImageAnalytics");
            StringAssert.StartsWith(InformationalVersion(typeof(SkiaSharp.SKBitmap)), "3.119", "SkiaSharp 3.119, as ImageAnalytics 6 needs");
        }

        private static string InformationalVersion(Type type)
            => type.Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "";

        private static Type? FindType(string name)
            => AppDomain.CurrentDomain.GetAssemblies().Where(a => a.GetName().Name!.StartsWith("Microsoft.ML", StringComparison.Ordinal))
                .Select(a => a.GetType(name)).FirstOrDefault(t => t is not null);

        [TestMethod]
        public void InternalsAreReachedOnlyThroughTheDeclaredAssemblies()
        {
            Assembly library = typeof(ImageClassificationTransformer).Assembly;
            string[] declared = library.GetCustomAttributesData()
                .Where(a => a.AttributeType.Name == "IgnoresAccessChecksToAttribute")
                .Select(a => (string)a.ConstructorArguments[0].Value!)
                .OrderBy(n => n, StringComparer.Ordinal).ToArray();
            CollectionAssert.AreEqual(new[] { "Microsoft.ML.Core", "Microsoft.ML.Data" }, declared);
            // The references the library compiled against are the genuine assemblies' identities.
            var references = library.GetReferencedAssemblies().Where(a => a.Name is "Microsoft.ML.Core" or "Microsoft.ML.Data").ToArray();
            Assert.AreEqual(2, references.Length);
            Assert.IsTrue(references.All(r => r.Version == new Version(1, 0, 0, 0) && r.GetPublicKeyToken()!.Length == 8),
                string.Join(", ", references.Select(r => r.FullName)));
        }

        [TestMethod]
        public void InternalMembersTheLibraryUsesExistInThisMLNet()
        {
            // What MLNetInternals and the transformer's persistence call; ML.NET 6 keeps them (internal).
            foreach (string name in new[]
            {
                "Microsoft.ML.Runtime.IHostEnvironmentInternal", // the MLContext's seed
                "Microsoft.ML.Data.IInternalCatalog", // the MLContext behind a catalog
                "Microsoft.ML.Data.ITransformerChainAccessor", // a chain's scopes
                "Microsoft.ML.ModelSaveContext", // public, with the persistence members internal
                "Microsoft.ML.ModelLoadContext",
                "Microsoft.ML.Model.OnnxConverter.OnnxContext", // ONNX export (MLNet/OnnxExport.cs)
                "Microsoft.ML.Model.OnnxConverter.ISaveAsOnnx",
                "Microsoft.ML.Model.OnnxConverter.ITransformCanSaveOnnx",
            })
            {
                Type? type = FindType(name);
                Assert.IsNotNull(type, name);
                if (!name.EndsWith("Context", StringComparison.Ordinal))
                    Assert.IsFalse(type!.IsPublic, name + " is internal in ML.NET: the publicized references are what let the library compile against it");
            }
        }
    }
}
