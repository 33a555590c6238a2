// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;

namespace PruningService
{
    /// <summary>
    /// <c>POST /predict</c>: one PNG or JPEG image as the request body, answered with one <see cref="ImagePrediction"/>,
    /// whatever its content type says, or several as multipart form files, answered with <see cref="ImagePredictions"/> in the order of the files. A request
    /// the service cannot score (empty, not an image, too large, too many files, a size the model does not take with
    /// resizing off) gets 400 with a problem-details body whose <c>detail</c> says why.
    /// </summary>
    public static class PredictEndpoint
    {
        /// <summary>The largest multipart request: every image at its limit, plus room for the parts' headers.</summary>
        public static long MaxMultipartBytes(PredictOptions options) => (long)options.MaxImageBytes * options.MaxImagesPerRequest + 64 * 1024;

        /// <summary>Maps the endpoint.</summary>
        public static void Map(WebApplication app)
        {
            app.MapPost("/predict", PredictAsync)
                .WithName("Predict")
                .WithSummary("Classifies a PNG or JPEG image sent as the request body, or several sent as multipart/form-data files.")
                .WithDescription("Images of another size than the model's are resized to it (unless Predict:ResizeImages is false) and converted "
                    + "to the model's channels (gray for a one-channel model), as the library's LoadImagePixels does; the response's image.resized says so. "
                    + "A multipart request is answered with {\"predictions\": [...]}, one per file, in their order.")
                .AddOpenApiOperationTransformer((operation, context, cancellationToken) =>
                {
                    // The body is read by the handler (any content type but multipart is taken as one image), so the
                    // description says what it takes.
                    var binary = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" };
                    operation.RequestBody = new OpenApiRequestBody
                    {
                        Required = true,
                        Description = "A PNG or JPEG image, or several as multipart/form-data files.",
                        Content = new Dictionary<string, OpenApiMediaType>
                        {
                            ["image/png"] = new() { Schema = binary },
                            ["image/jpeg"] = new() { Schema = binary },
                            ["multipart/form-data"] = new()
                            {
                                Schema = new OpenApiSchema
                                {
                                    Type = JsonSchemaType.Object,
                                    AdditionalProperties = binary,
                                },
                            },
                        },
                    };
                    return Task.CompletedTask;
                })
                .Produces<ImagePrediction>(StatusCodes.Status200OK)
                .ProducesProblem(StatusCodes.Status400BadRequest)
                .DisableAntiforgery();
        }

        private static async Task<IResult> PredictAsync(HttpRequest request, ModelHost host, IOptions<PredictOptions> options, CancellationToken cancellationToken)
        {
            PredictOptions limits = options.Value;
            try
            {
                if (request.ContentType?.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase) == true)
                    return Results.Ok(await PredictFormAsync(request, host, limits, cancellationToken));
                byte[] body = await ReadBodyAsync(request, limits.MaxImageBytes, cancellationToken);
                return Results.Ok(host.Predict(body));
            }
            catch (ImageRejectedException ex)
            {
                return Refuse(ex.Message);
            }
            catch (InvalidDataException ex)
            {
                // The form reader's limits and malformed multipart bodies.
                return Refuse($"The multipart body could not be read: {ex.Message}");
            }
            catch (BadHttpRequestException ex)
            {
                return Refuse($"The request body could not be read: {ex.Message}");
            }
            catch (IOException ex) when (!cancellationToken.IsCancellationRequested)
            {
                return Refuse($"The request body could not be read: {ex.Message}");
            }
        }

        private static async Task<ImagePredictions> PredictFormAsync(HttpRequest request, ModelHost host, PredictOptions limits, CancellationToken cancellationToken)
        {
            long maxBytes = MaxMultipartBytes(limits);
            if (request.ContentLength > maxBytes)
            {
                throw new ImageRejectedException(FormattableString.Invariant(
                    $"The request body is {request.ContentLength:N0} bytes; the limit is {maxBytes:N0} bytes ({limits.MaxImagesPerRequest} images of {limits.MaxImageBytes:N0} bytes)."));
            }
            IFormCollection form = await request.ReadFormAsync(cancellationToken);
            if (form.Files.Count == 0)
                throw new ImageRejectedException("The form holds no files: send each image as a file part of the multipart/form-data body.");
            if (form.Files.Count > limits.MaxImagesPerRequest)
                throw new ImageRejectedException($"The form holds {form.Files.Count} files; the limit is {limits.MaxImagesPerRequest} (Predict:MaxImagesPerRequest).");

            var predictions = new List<ImagePrediction>(form.Files.Count);
            foreach (IFormFile file in form.Files)
            {
                string name = string.IsNullOrEmpty(file.FileName) ? file.Name : file.FileName;
                if (file.Length > limits.MaxImageBytes)
                    throw new ImageRejectedException(FormattableString.Invariant($"File '{name}' is {file.Length:N0} bytes; the limit is {limits.MaxImageBytes:N0} bytes (Predict:MaxImageBytes)."));
                var bytes = new byte[file.Length];
                using (Stream stream = file.OpenReadStream())
                    await stream.ReadExactlyAsync(bytes, cancellationToken);
                predictions.Add(host.Predict(bytes, name));
            }
            return new ImagePredictions(predictions);
        }

        /// <summary>Reads the body, refusing it as soon as it is longer than <paramref name="limit"/> bytes.</summary>
        private static async Task<byte[]> ReadBodyAsync(HttpRequest request, int limit, CancellationToken cancellationToken)
        {
            if (request.ContentLength > limit)
                throw new ImageRejectedException(FormattableString.Invariant($"The request body is {request.ContentLength:N0} bytes; the limit is {limit:N0} bytes (Predict:MaxImageBytes)."));
            using var body = new MemoryStream((int)Math.Min(request.ContentLength ?? 16 * 1024, limit));
            var chunk = new byte[16 * 1024];
            int read;
            while ((read = await request.Body.ReadAsync(chunk, cancellationToken)) > 0)
            {
                if (body.Length + read > limit)
                    throw new ImageRejectedException(FormattableString.Invariant($"The request body is more than {limit:N0} bytes, the limit (Predict:MaxImageBytes)."));
                body.Write(chunk, 0, read);
            }
            return body.ToArray();
        }

        private static IResult Refuse(string detail)
            => Results.Problem(detail: detail, statusCode: StatusCodes.Status400BadRequest, title: "The request cannot be scored.");
    }
}
