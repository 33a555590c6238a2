// Licensed under the MIT license.

using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace PruningService
{
    /// <summary>
    /// The web application: <c>POST /predict</c>, <c>GET /model</c>, <c>GET /health</c>, the OpenAPI description at
    /// <c>/openapi/v1.json</c> and an upload page at <c>/</c>. Configuration: <c>Model:Path</c> (required) and the
    /// <c>Predict</c> section (<see cref="PredictOptions"/>).
    /// </summary>
    public static class ServiceApp
    {
        /// <summary>Builds the application; the model loads when it starts, and a model that cannot be served stops the start
        /// with a <see cref="ModelLoadException"/>.</summary>
        /// <param name="args">Command-line arguments (configuration such as <c>--Model:Path=model.zip</c>, <c>--urls=…</c>).</param>
        /// <param name="configure">More configuration of the builder, or null.</param>
        public static WebApplication Create(string[] args, Action<WebApplicationBuilder>? configure = null)
        {
            WebApplicationBuilder builder = WebApplication.CreateBuilder(args);
            builder.Services.Configure<ModelOptions>(builder.Configuration.GetSection(ModelOptions.Section));
            builder.Services.Configure<PredictOptions>(builder.Configuration.GetSection(PredictOptions.Section));
            builder.Services.AddSingleton(services => new ModelHost(
                services.GetRequiredService<IOptions<ModelOptions>>(), services.GetRequiredService<IOptions<PredictOptions>>()));
            builder.Services.AddHostedService<ModelLoading>();

            // Multipart requests carry up to MaxImagesPerRequest images of MaxImageBytes each; Kestrel's own limit follows.
            builder.Services.AddOptions<FormOptions>().Configure<IOptions<PredictOptions>>((form, predict) =>
                form.MultipartBodyLengthLimit = PredictEndpoint.MaxMultipartBytes(predict.Value));
            builder.Services.AddOptions<KestrelServerOptions>().Configure<IOptions<PredictOptions>>((kestrel, predict) =>
                kestrel.Limits.MaxRequestBodySize = PredictEndpoint.MaxMultipartBytes(predict.Value));

            builder.Services.AddProblemDetails();
            builder.Services.AddOpenApi();
            builder.Services.AddHealthChecks().AddCheck<ModelHealthCheck>("model");
            configure?.Invoke(builder);

            WebApplication app = builder.Build();
            app.UseExceptionHandler();
            app.UseStatusCodePages();
            app.MapOpenApi();
            app.MapHealthChecks("/health");
            PredictEndpoint.Map(app);
            app.MapGet("/model", (ModelHost host) => host.Describe())
                .WithName("GetModel")
                .WithSummary("The served model: architecture, how it was pruned, parameters, multiply-accumulates, sizes and layers.")
                .Produces<ModelDescription>();
            app.MapGet("/", () => Results.Content(s_page.Value, "text/html; charset=utf-8")).ExcludeFromDescription();
            return app;
        }

        private static readonly Lazy<string> s_page = new(() =>
        {
            using Stream stream = typeof(ServiceApp).Assembly.GetManifestResourceStream("index.html")!;
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        });

        /// <summary>Loads the model as the application starts, so that a model that cannot be served stops the start.</summary>
        private sealed class ModelLoading : IHostedService
        {
            public ModelLoading(ModelHost host, ILogger<ModelLoading> logger)
            {
                logger.LogInformation("Serving {Path}: {Architecture} ({Method}), {Parameters:N0} parameters ({NonZero:N0} non-zero), {Macs:N0} MACs per image",
                    host.ModelPath, host.Summary.Architecture, host.Method, host.Summary.Parameters, host.Summary.NonZeroParameters, host.Summary.MultiplyAccumulates);
            }

            public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

            public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        }

        /// <summary>Healthy when a blank image of the model's size scores to finite probabilities that sum to 1.</summary>
        private sealed class ModelHealthCheck : IHealthCheck
        {
            private readonly ModelHost _host;
            private readonly byte[] _blank;

            public ModelHealthCheck(ModelHost host)
            {
                _host = host;
                using var bitmap = new SkiaSharp.SKBitmap(host.Input.Width, host.Input.Height, SkiaSharp.SKColorType.Gray8, SkiaSharp.SKAlphaType.Opaque);
                bitmap.Erase(SkiaSharp.SKColors.Black);
                using SkiaSharp.SKData png = bitmap.Encode(SkiaSharp.SKEncodedImageFormat.Png, 100);
                _blank = png.ToArray();
            }

            public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
            {
                ImagePrediction prediction = _host.Predict(_blank);
                float sum = 0;
                foreach (ClassScore score in prediction.Scores)
                    sum += score.Score;
                return Task.FromResult(float.IsFinite(sum) && Math.Abs(sum - 1) < 1e-3
                    ? HealthCheckResult.Healthy($"{_host.Summary.Architecture} ({_host.Method}) from {_host.ModelPath}")
                    : HealthCheckResult.Unhealthy($"A blank image scored to probabilities that sum to {sum}."));
            }
        }
    }
}
