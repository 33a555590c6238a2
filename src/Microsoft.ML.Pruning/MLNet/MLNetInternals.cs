// Licensed under the MIT license.

using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Pruning.MLNet
{
    /// <summary>The few ML.NET internals the library needs outside the transformer's persistence code.</summary>
    internal static class MLNetInternals
    {
        /// <summary>The MLContext behind a catalog (ML.NET keeps it internal).</summary>
        public static IHostEnvironment GetEnvironment(object catalog) => CatalogUtils.GetEnvironment((IInternalCatalog)catalog);

        /// <summary>The seed the MLContext was created with, or null.</summary>
        public static int? GetSeed(IHostEnvironment env) => (env as IHostEnvironmentInternal)?.Seed;
    }
}
