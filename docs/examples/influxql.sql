-- Tested by tests/test_side_doors.py against InfluxDB 1.6.7 (`influx -database sensors`);
-- on 2.x and 3.x the same InfluxQL works through /query (the bucket is the database).

-- The latest reading of one device (several last() in one query would all report time 0).
SELECT temperature, humidity FROM environment WHERE device = 'greenhouse' ORDER BY time DESC LIMIT 1;

-- Hourly means over the last day, per device.
SELECT mean(temperature) AS temperature, mean(humidity) AS humidity FROM environment WHERE time > now() - 24h GROUP BY time(1h), device fill(none);

-- Lowest and highest temperature per day over the last week, per device.
SELECT min(temperature) AS low, max(temperature) AS high FROM environment WHERE time > now() - 7d GROUP BY time(1d), device fill(none);

-- How many readings each device sent in the last hour (gaps show as lower counts).
SELECT count(temperature) FROM environment WHERE time > now() - 1h GROUP BY device;
