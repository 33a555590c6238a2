// Licensed under the MIT license.

using System;
using Microsoft.AspNetCore.Builder;

namespace PruningService
{
    /// <summary>
    /// Serves one saved model over HTTP: <c>dotnet run --project samples/PruningService -- --Model:Path=model.zip</c>
    /// (see <see cref="ServiceApp"/> for the endpoints and the configuration).
    /// </summary>
    public sealed class Program
    {
        private Program()
        {
        }

        /// <summary>Runs the service until it is stopped; exits 1, saying why, when the model cannot be served.</summary>
        public static int Main(string[] args)
        {
            WebApplication app = ServiceApp.Create(args);
            try
            {
                app.Run();
                return 0;
            }
            catch (ModelLoadException ex)
            {
                Console.Error.WriteLine($"PruningService cannot start: {ex.Message}");
                return 1;
            }
        }
    }
}
