using CSharpConsumer;
using Kcl;
using Microsoft.Extensions.Logging;

using var logging = KclLogging.CreateFactory();
var processor = new CountingProcessor(logging.CreateLogger<CountingProcessor>());
return await KclProcess.RunAsync(processor, KclOptions.Default.WithLoggerFactory(logging));
