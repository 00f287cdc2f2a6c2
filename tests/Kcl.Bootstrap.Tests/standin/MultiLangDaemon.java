// A stand-in for the KCL's MultiLangDaemon, compiled by the launch tests: it reads --properties-file, starts
// executableName as a child (split on spaces, as the real daemon does), sends initialize and processRecords, answers
// checkpoints, and on SIGTERM or SIGINT (its shutdown hook, like the real daemon's) sends shutdownRequested.
// It prints its progress on stdout for the tests to follow. standInExitCode = N makes it exit with N instead.
package software.amazon.kinesis.multilang;

import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.Properties;

public class MultiLangDaemon {
    static BufferedWriter toChild;
    static BufferedReader fromChild;

    static void send(String json) throws IOException {
        toChild.write(json);
        toChild.write("\n");
        toChild.flush();
    }

    static void expectStatus(String action) throws IOException {
        while (true) {
            String line = fromChild.readLine();
            if (line == null) throw new IOException("the child exited before answering " + action);
            if (line.isEmpty()) continue;
            if (line.contains("\"action\":\"checkpoint\"")) {
                send("{\"action\":\"checkpoint\",\"sequenceNumber\":\"1\",\"subSequenceNumber\":0,\"error\":null}");
            } else if (line.contains("\"action\":\"status\"") && line.contains("\"responseFor\":\"" + action + "\"")) {
                return;
            } else {
                throw new IOException("unexpected line while waiting for " + action + ": " + line);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String file = null;
        for (int i = 0; i < args.length; i++) if (args[i].equals("--properties-file")) file = args[++i];
        if (file == null) { System.err.println("Properties file missing"); System.exit(1); }
        Properties properties = new Properties();
        // The real daemon looks the file up as a classpath resource first: the bootstrap puts its folder there.
        InputStream resource = MultiLangDaemon.class.getClassLoader().getResourceAsStream(new File(file).getName());
        System.out.println("stand-in: properties folder on classpath: " + (resource != null));
        try (InputStream in = new FileInputStream(file)) { properties.load(in); }
        System.out.println("stand-in: file.encoding=" + System.getProperty("file.encoding"));

        Process child = new ProcessBuilder(properties.getProperty("executableName").trim().split(" +"))
            .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        toChild = new BufferedWriter(new OutputStreamWriter(child.getOutputStream(), StandardCharsets.UTF_8));
        fromChild = new BufferedReader(new InputStreamReader(child.getInputStream(), StandardCharsets.UTF_8));

        send("{\"action\":\"initialize\",\"shardId\":\"shardId-000000000000\",\"sequenceNumber\":\"TRIM_HORIZON\",\"subSequenceNumber\":0}");
        expectStatus("initialize");
        send("{\"action\":\"processRecords\",\"millisBehindLatest\":0,\"records\":[{\"action\":\"record\",\"data\":\"aGVsbG8=\",\"partitionKey\":\"k\",\"sequenceNumber\":\"1\",\"subSequenceNumber\":0,\"approximateArrivalTimestamp\":1700000000000}]}");
        expectStatus("processRecords");

        String exitCode = properties.getProperty("standInExitCode");
        if (exitCode != null) {
            child.getOutputStream().close();
            child.waitFor();
            System.out.println("stand-in: exiting with " + exitCode.trim());
            System.out.flush();
            System.exit(Integer.parseInt(exitCode.trim()));
        }

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                send("{\"action\":\"shutdownRequested\",\"checkpoint\":null}");
                expectStatus("shutdownRequested");
                System.out.println("stand-in: shutdownRequested answered");
                child.getOutputStream().close();
                child.waitFor();
            } catch (Exception e) {
                System.out.println("stand-in: shutdown failed: " + e);
            }
            System.out.flush();
        }));
        System.out.println("stand-in: ready pid=" + ProcessHandle.current().pid());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
