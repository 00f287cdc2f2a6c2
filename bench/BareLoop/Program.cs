// The reference the library is measured against: a hand-written child with no library, as a careful user would
// write it. It reads each line, finds the action with Utf8JsonReader, base64-decodes every record, counts the bytes,
// checkpoints once per batch (and at shard end), and answers each action with its status.
using System.Text;
using System.Text.Json;

var stdin = Console.OpenStandardInput();
var stdout = Console.OpenStandardOutput();
var reader = new LineReader(stdin);
long records = 0, bytes = 0;

byte[] Status(string action) => Encoding.ASCII.GetBytes($"\n{{\"action\":\"status\",\"responseFor\":\"{action}\"}}\n");
var checkpoint = Encoding.ASCII.GetBytes("\n{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null}\n");

void Send(byte[] line)
{
    stdout.Write(line);
    stdout.Flush();
}

void AwaitReply()
{
    while (reader.ReadLine() is { } line)
    {
        if (line.Length > 0 && Action(line) == "checkpoint") return;
    }
}

static string Action(ReadOnlySpan<byte> line)
{
    var json = new Utf8JsonReader(line);
    json.Read();
    while (json.Read() && json.TokenType == JsonTokenType.PropertyName)
    {
        var isAction = json.ValueTextEquals("action"u8);
        json.Read();
        if (isAction) return json.GetString()!;
        json.Skip();
    }

    return "";
}

while (reader.ReadLine() is { } line)
{
    if (line.Length == 0) continue;
    var action = Action(line);
    if (action == "processRecords")
    {
        var json = new Utf8JsonReader(line);
        while (json.Read())
        {
            if (json.TokenType == JsonTokenType.PropertyName && json.ValueTextEquals("data"u8))
            {
                json.Read();
                var data = json.GetBytesFromBase64();
                bytes += data.Length;
                records++;
            }
        }

        Send(checkpoint);
        AwaitReply();
    }
    else if (action == "shardEnded")
    {
        Send(checkpoint);
        AwaitReply();
    }

    Send(Status(action));
}

Console.Error.WriteLine($"bare-loop: {records} records, {bytes} bytes");

/// <summary>Reads lines of any length as bytes.</summary>
sealed class LineReader(Stream stream)
{
    private byte[] buffer = new byte[1 << 16];
    private int start, end;

    public byte[]? ReadLine()
    {
        var scanned = start;
        while (true)
        {
            var newline = Array.IndexOf(buffer, (byte)'\n', scanned, end - scanned);
            if (newline >= 0)
            {
                var line = buffer.AsSpan(start, newline - start).ToArray();
                start = newline + 1;
                return line;
            }

            scanned = end;
            if (start > 0)
            {
                Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                end -= start;
                scanned -= start;
                start = 0;
            }

            if (end == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2);
            var read = stream.Read(buffer, end, buffer.Length - end);
            if (read == 0)
            {
                if (end > start)
                {
                    var last = buffer.AsSpan(start, end - start).ToArray();
                    start = end;
                    return last;
                }

                return null;
            }

            end += read;
        }
    }
}
